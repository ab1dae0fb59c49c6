"""Insight rendering (bounded whatever the history) and priors from insights."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory import Insight, priors_from_insights, render_summary, sd_from_interval

words = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@st.composite
def insights(draw):
    lo = draw(st.floats(min_value=-1e3, max_value=1e3))
    width = draw(st.floats(min_value=0, max_value=1e3))
    t_created = draw(st.floats(min_value=0, max_value=100))
    return Insight(
        id=draw(st.integers(1, 10**6)), env_fingerprint="env",
        kind=draw(st.sampled_from(["effect", "category_effect", "interaction", "dead_end",
                                   "noise"])),
        subject=draw(words), statement=draw(words), mean=lo + width / 2, lo=lo, hi=lo + width,
        evidence=draw(st.integers(0, 10**6)), unit=draw(words), t_created=t_created,
        active=draw(st.booleans()), superseded_by=None, presentations=(t_created,),
    )


@given(st.lists(insights(), max_size=60), st.integers(0, 2000), st.booleans())
def test_summary_is_bounded_whatever_the_history(history, max_chars, by_activation):
    text = render_summary(history, max_chars, t_now=100.0 if by_activation else None)
    assert len(text) <= max_chars
    active = sum(insight.active for insight in history)
    lines = text.splitlines()
    if text and lines[-1].startswith("(+"):
        listed = len(lines) - 1
        assert listed + int(lines[-1][2:].split()[0]) == active
    if active == 0:
        assert text == ""


def make(subject, kind="effect", mean=-0.1, lo=-0.2, hi=0.0, t=0.0, presentations=None,
         active=True, id=1, evidence=5):
    return Insight(id=id, env_fingerprint="env", kind=kind, subject=subject,
                   statement=f"{subject} statement", mean=mean, lo=lo, hi=hi, evidence=evidence,
                   unit="bpb", t_created=t, active=active, superseded_by=None,
                   presentations=(t,) if presentations is None else presentations)


def test_summary_lists_the_most_active_first_and_counts_the_rest():
    history = [make("old", t=0.0, id=1), make("new", t=90.0, id=2), make("mid", t=50.0, id=3)]
    full = render_summary(history, 10_000, t_now=100.0)
    assert [line.split()[2] for line in full.splitlines()] == ["new:", "mid:", "old:"]
    first_line = full.splitlines()[0]
    short = render_summary(history, len(first_line) + 30, t_now=100.0)
    assert short.splitlines() == [first_line, "(+2 more insights)"]
    assert render_summary(history, 10, t_now=100.0) == first_line[:9] + "…"
    assert "\n" not in render_summary([make("a\nb\tc")], 500)


def test_priors_use_the_latest_hypothesis_insight_and_ignore_others():
    history = [
        make("rope", mean=-0.1, t=0.0, id=1),
        make("rope", kind="dead_end", mean=0.3, lo=0.2, hi=0.4, t=5.0, id=2),
        make("arch", kind="category_effect", id=3),
        make("gone", active=False, id=4),
        make("never", presentations=(), id=5),
    ]
    priors = priors_from_insights(history, t_now=5.0, decay=0.5)
    assert set(priors) == {"rope"}
    assert priors["rope"] == pytest.approx((0.3, sd_from_interval(0.2, 0.4)))


@given(st.floats(min_value=1, max_value=1e4), st.floats(min_value=0.05, max_value=0.95))
def test_priors_widen_as_the_insight_decays(elapsed, decay):
    insight = make("rope", t=0.0)
    near = priors_from_insights([insight], t_now=1.0, decay=decay)["rope"]
    far = priors_from_insights([insight], t_now=1.0 + elapsed, decay=decay)["rope"]
    assert near[0] == far[0]
    assert far[1] > near[1] == pytest.approx(sd_from_interval(-0.2, 0.0))
