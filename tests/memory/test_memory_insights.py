"""Insight rendering (bounded whatever the history) and priors from insights."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory import (
    Insight,
    activation,
    pool_estimates,
    priors_from_insights,
    render_summary,
    sd_from_interval,
    widened_sd,
)

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
         active=True, id=1, evidence=5, source=""):
    return Insight(id=id, env_fingerprint="env", kind=kind, subject=subject,
                   statement=f"{subject} statement", mean=mean, lo=lo, hi=hi, evidence=evidence,
                   unit="bpb", t_created=t, active=active, superseded_by=None, source=source,
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


# Subnormal means underflow when weighted (5e-324 / 4 is 0): float artefacts, not the formula.
estimates = st.lists(st.tuples(st.floats(min_value=-1e3, max_value=1e3, allow_subnormal=False),
                               st.floats(min_value=1e-3, max_value=1e3)), min_size=1, max_size=12)


@given(estimates)
def test_pooling_is_the_precision_weighted_closed_form(pairs):
    mean, sd = pool_estimates(pairs)
    precision = sum(s**-2 for _, s in pairs)
    scale = max(abs(m) for m, _ in pairs)
    assert mean == pytest.approx(sum(m * s**-2 for m, s in pairs) / precision,
                                 rel=1e-9, abs=1e-12 * scale)
    assert sd == pytest.approx(precision**-0.5, rel=1e-9)
    means = [m for m, _ in pairs]
    assert min(means) - 1e-9 * scale <= mean <= max(means) + 1e-9 * scale
    assert sd <= min(s for _, s in pairs) * (1 + 1e-12)  # more evidence is never less certain


@given(estimates, estimates)
def test_pooling_in_parts_is_pooling_at_once(first, second):
    # a Gaussian posterior pooled with further evidence is the pool of all of it
    at_once = pool_estimates(first + second)
    in_parts = pool_estimates([pool_estimates(first), pool_estimates(second)])
    scale = max(abs(m) for m, _ in first + second)
    assert in_parts == pytest.approx(at_once, rel=1e-9, abs=1e-9 * scale)


@given(st.floats(min_value=-1e3, max_value=1e3), st.floats(min_value=1e-3, max_value=1e3),
       st.integers(1, 50))
def test_k_equal_estimates_pool_to_sd_over_root_k(mean, sd, k):
    assert pool_estimates([(mean, sd)] * k) == pytest.approx((mean, sd / math.sqrt(k)))


@pytest.mark.parametrize("pairs", [[], [(0.0, 0.0)], [(0.0, 1.0), (0.0, math.inf)]])
def test_pooling_refuses_no_estimate_and_degenerate_sds(pairs):
    with pytest.raises(ValueError):
        pool_estimates(pairs)


def test_priors_pool_the_sources_each_widened_by_its_own_decay():
    # a 15-run insight and a later 2-run one of another study: neither replaces the other
    many = make("rope", mean=-0.10, lo=-0.12, hi=-0.08, t=0.0, id=1, evidence=15, source="a")
    few = make("rope", mean=0.05, lo=-0.15, hi=0.25, t=8.0, id=2, evidence=2, source="b")
    stale = make("rope", mean=0.9, lo=0.8, hi=1.0, t=0.0, id=3, source="b")  # b's older one
    t_now = 10.0
    sds = [widened_sd(sd_from_interval(i.lo, i.hi), activation(i.presentations, t_now, 0.5))
           for i in (many, few)]
    assert sds[0] > sd_from_interval(many.lo, many.hi)  # 10 experiments old: widened
    precision = sds[0] ** -2 + sds[1] ** -2
    expected = ((-0.10 * sds[0] ** -2 + 0.05 * sds[1] ** -2) / precision, precision**-0.5)
    priors = priors_from_insights([many, stale, few], t_now=t_now, decay=0.5)
    assert priors["rope"] == pytest.approx(expected)
