"""Decay maths: ACT-R activation, the power-prior weight and the interval-to-sd conversion."""

import math
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory import activation, evidence_weight, recall_score, sd_from_interval, widened_sd

decays = st.floats(min_value=0.05, max_value=0.95)
times = st.lists(st.floats(min_value=0.0, max_value=1e4), min_size=1, max_size=20)
gaps = st.floats(min_value=0.5, max_value=1e4)


@settings(max_examples=200)
@given(presentations=times, decay=decays, lag=st.floats(min_value=1.0, max_value=1e4), more=gaps)
def test_activation_falls_as_experiments_elapse(presentations, decay, lag, more):
    t_now = max(presentations) + lag  # every presentation at least one experiment old
    assert activation(presentations, t_now + more, decay) < activation(presentations, t_now, decay)


@settings(max_examples=200)
@given(presentations=times, decay=decays, lag=st.floats(min_value=0.0, max_value=1e4))
def test_recall_reinforces(presentations, decay, lag):
    t_now = max(presentations) + lag
    before = activation(presentations, t_now, decay)
    after = activation([*presentations, t_now], t_now, decay)
    assert after > before
    # a fresh presentation contributes exactly 1 (age floored at one experiment)
    assert math.exp(after) == pytest.approx(math.exp(before) + 1.0)


def test_activation_matches_the_formula_by_hand():
    # presentations 10 and 1 experiments old, d = 0.5
    assert activation([0.0, 9.0], 10.0, 0.5) == pytest.approx(math.log(10**-0.5 + 1.0))


def test_activation_edge_cases_and_errors():
    assert activation([], 3.0, 0.5) == -math.inf
    assert activation([3.0], 3.0, 0.5) == 0.0  # presented now: one experiment old
    with pytest.raises(ValueError, match="t=5.0"):
        activation([5.0], 3.0, 0.5)
    with pytest.raises(ValueError, match="decay"):
        activation([1.0], 3.0, 1.0)


@settings(max_examples=200)
@given(sd=st.floats(min_value=1e-6, max_value=1e3), a=st.floats(min_value=-20, max_value=5),
       drop=st.floats(min_value=0.01, max_value=5))
def test_widening_never_narrows_and_grows_with_decay(sd, a, drop):
    assert widened_sd(sd, a) >= sd
    assert widened_sd(sd, a - drop) >= widened_sd(sd, a)
    if a < 0:
        assert widened_sd(sd, a - drop) > widened_sd(sd, a)
        assert widened_sd(sd, a) == pytest.approx(sd * math.exp(-a / 2))
    assert 0.0 < evidence_weight(a) <= 1.0


def test_widening_limits():
    assert widened_sd(2.0, 0.0) == 2.0
    assert widened_sd(2.0, 3.0) == 2.0  # reinforcement cannot exceed the evidence
    assert widened_sd(2.0, -math.inf) == math.inf
    with pytest.raises(ValueError, match="-1"):
        widened_sd(-1.0, 0.0)


@settings(max_examples=100)
@given(mean=st.floats(min_value=-100, max_value=100), sd=st.floats(min_value=1e-3, max_value=10))
def test_sd_from_interval_inverts_a_gaussian_interval(mean, sd):
    dist = NormalDist(mean, sd)
    assert sd_from_interval(dist.inv_cdf(0.05), dist.inv_cdf(0.95)) == pytest.approx(sd, rel=1e-6)


def test_sd_from_interval_errors():
    with pytest.raises(ValueError, match="exceeds"):
        sd_from_interval(1.0, 0.0)
    with pytest.raises(ValueError, match="level"):
        sd_from_interval(0.0, 1.0, level=1.5)


def test_recall_score_adds_relevance():
    assert recall_score(-1.5, 2, 0.75) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="-1"):
        recall_score(0.0, -1, 1.0)
