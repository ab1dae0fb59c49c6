"""The expected scores of a forecast against Monte Carlo draws from the posterior mixture."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from beliefs.scores import expected_brier, expected_log_score, forecast_p_better

finite = st.floats(-2.0, 2.0)
positive = st.floats(0.05, 2.0)


# A probability of either certainty, or of at least 1% either way, so that 200,000 draws hold
# thousands of each outcome and the normal Monte Carlo error holds (the rare-event tail of a
# smaller one is Poisson, which a 5-sd bound does not cover).
probabilities = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.01, 0.99))


@settings(max_examples=30, deadline=None)
@given(mu=finite, sigma=positive, p0=probabilities, m=finite, s=positive,
       seed=st.integers(0, 2**32 - 1))
def test_the_expected_log_score_is_the_mixtures_monte_carlo_mean(mu, sigma, p0, m, s, seed):
    rng = np.random.default_rng(seed)
    n = 200_000
    draws = np.where(rng.random(n) < p0, 0.0, rng.normal(m, s, n))
    scores = stats.norm.logpdf(draws, mu, sigma)
    closed = expected_log_score(mu, sigma, p0, m, s * s)
    assert abs(scores.mean() - closed) < 5 * scores.std() / math.sqrt(n) + 1e-9


@settings(max_examples=30, deadline=None)
@given(p=st.floats(0.0, 1.0), q=probabilities, seed=st.integers(0, 2**32 - 1))
def test_the_expected_brier_is_the_monte_carlo_mean(p, q, seed):
    """The score is (p - 1)^2 with probability q, else p^2: its sd is sqrt(q (1 - q)) |1 - 2p|,
    exactly, so the Monte Carlo error is known even where no draw was an event."""
    n = 200_000
    outcomes = np.random.default_rng(seed).random(n) < q
    scores = (p - outcomes) ** 2
    sd = math.sqrt(q * (1 - q)) * abs(1 - 2 * p)
    assert abs(scores.mean() - expected_brier(p, q)) < 5 * sd / math.sqrt(n) + 1e-12


def test_the_forecasts_p_better_is_its_normal_cdf_and_the_brier_is_proper():
    assert forecast_p_better(-0.01, 0.01, 0.0) == stats.norm.cdf(0.0, -0.01, 0.01)
    assert forecast_p_better(0.0, 1.0, 0.5) == stats.norm.cdf(-0.5)
    grid = np.linspace(0, 1, 101)
    for q in (0.1, 0.5, 0.93):  # the expected Brier is least at the posterior's own q
        assert grid[np.argmin([expected_brier(p, q) for p in grid])] == round(q, 2)
