"""The spike-and-slab prior: Savage-Dickey Bayes factors against exact evidence, the null share's
posterior, and the null probability's calibration by Monte Carlo."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation
from beliefs.spike import (
    NULL_SHARE_GRID,
    SpikePrior,
    log_bayes_factor_null,
    null_probability,
    null_share_posterior,
)

GAUSSIAN_DF = 1e13  # a Student-t with this many df is a Gaussian to ~1e-13 (relative, |z| < 100)


def evidence(
    z: np.ndarray, design: np.ndarray, prior_var: np.ndarray, a0: float, b0: float
) -> float:
    """log p(z) nats for z = X theta + eps, theta | s2 ~ N(0, s2 diag(prior_var)), s2 ~ IG(a0, b0):
    the multivariate Student-t marginal t_{2 a0}(0, (b0/a0)(I + X diag(prior_var) X^T))."""
    shape = b0 / a0 * (np.eye(len(z)) + design @ np.diag(prior_var) @ design.T)
    return float(stats.multivariate_t.logpdf(z, loc=np.zeros(len(z)), shape=shape, df=2 * a0))


def test_savage_dickey_equals_the_exact_evidence_ratio_of_the_conjugate_model():
    """H1: z = b0 + (delta + m_g) x + eps (the model's columns); H0: the effect is 0 and, as the
    ratio assumes, sigma^2 has the slab's prior given a zero effect, IG(a0 + 1/2, b0)."""
    rng = np.random.default_rng(4)
    prior = BeliefPrior(effect_sd=0.6, category_mean_sd=0.5, baseline_sd=3.0, noise_df=4.0,
                        noise_sd=1.0, empirical_bayes=False, standardisation=(0.0, 1.0))
    beliefs = Beliefs([Hypothesis("h", "cat")], prior=prior)
    applied = np.array([0, 0, 0, 1, 1, 1, 0, 1], dtype=float)
    z = 0.3 + 0.4 * applied + rng.standard_normal(len(applied))
    beliefs.update([Observation(frozenset({"h"} if x else set()), float(v))
                    for x, v in zip(applied, z)])
    a0, b0 = prior.noise_shape, prior.noise_rate
    ones = np.ones(len(z))
    slab = evidence(z, np.column_stack([ones, applied, applied]),
                    np.array([prior.baseline_sd**2, prior.effect_sd**2,
                              prior.category_mean_sd**2]), a0, b0)
    null = evidence(z, ones[:, None], np.array([prior.baseline_sd**2]), a0 + 0.5, b0)
    spike = beliefs.spike(frozenset({"h"}), frozenset())
    diff = beliefs.difference(frozenset({"h"}), frozenset())
    log_bf = log_bayes_factor_null(float(diff.mean), float(diff.scale), spike.posterior_df,
                                   spike.prior_mean, spike.prior_scale, spike.prior_df)
    assert float(log_bf) == pytest.approx(null - slab, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(ybar=st.floats(-3, 3), n=st.integers(1, 50), sigma=st.floats(0.1, 3), tau=st.floats(0.05, 5))
def test_with_known_noise_the_ratio_is_the_closed_form_bayes_factor(ybar, n, sigma, tau):
    """y_i ~ N(d, sigma^2): BF01 = N(ybar; 0, sigma^2/n) / N(ybar; 0, sigma^2/n + tau^2)."""
    post_var = 1.0 / (n / sigma**2 + 1.0 / tau**2)
    post_mean = post_var * n * ybar / sigma**2
    log_bf = log_bayes_factor_null(post_mean, np.sqrt(post_var), GAUSSIAN_DF, 0.0, tau, GAUSSIAN_DF)
    closed = (stats.norm.logpdf(ybar, 0.0, sigma / np.sqrt(n))
              - stats.norm.logpdf(ybar, 0.0, np.sqrt(sigma**2 / n + tau**2)))
    assert float(log_bf) == pytest.approx(closed, rel=1e-6, abs=1e-6)


def test_without_data_the_null_share_is_its_prior():
    weights = null_share_posterior(np.zeros(0), 0.7)
    assert weights.sum() == pytest.approx(1.0)
    assert float(weights @ NULL_SHARE_GRID) == pytest.approx(0.7, abs=1e-3)  # Beta(1.4, 0.6) mean
    with pytest.raises(ValueError, match="prior_null_share"):
        null_share_posterior(np.zeros(0), 1.0)


@settings(max_examples=60, deadline=None)
@given(log_bfs=st.lists(st.floats(-20, 20), max_size=12), extra=st.floats(-20, 20),
       prior=st.floats(0.05, 0.95))
def test_evidence_for_the_spike_raises_the_null_share_and_evidence_against_lowers_it(
    log_bfs, extra, prior
):
    before = null_share_posterior(np.array(log_bfs), prior)
    after = null_share_posterior(np.array([*log_bfs, extra]), prior)
    assert np.all(after >= 0) and after.sum() == pytest.approx(1.0)
    shift = float((after - before) @ NULL_SHARE_GRID)
    assert np.sign(shift) == np.sign(extra) or abs(shift) < 1e-12 or extra == 0
    # The null probability rises with the Bayes factor and stays a probability.
    low, high = null_probability(extra - 1.0, after), null_probability(extra, after)
    assert 0.0 <= low <= high <= 1.0


def test_with_a_known_null_share_the_null_probability_is_the_two_point_posterior():
    weights = np.zeros(len(NULL_SHARE_GRID))
    index = int(np.argmin(np.abs(NULL_SHARE_GRID - 0.3)))
    weights[index] = 1.0
    share = NULL_SHARE_GRID[index]
    for log_bf in (-3.0, 0.0, 2.5):
        bf = np.exp(log_bf)
        assert null_probability(log_bf, weights) == pytest.approx(
            share * bf / (share * bf + 1 - share))
    assert null_probability(np.inf, weights) == 1.0 and null_probability(-np.inf, weights) == 0.0


def test_null_probabilities_are_calibrated_and_the_null_share_is_learnt_by_monte_carlo():
    """Effects from the spike-and-slab prior with pi0 = 0.3, one noisy observation each: the
    learnt share is near 0.3 and, in every bin, the claimed P(null) matches the frequency."""
    rng = np.random.default_rng(17)
    count, true_share, tau, noise = 3000, 0.3, 1.0, 0.7
    null = rng.random(count) < true_share
    effect = np.where(null, 0.0, tau * rng.standard_normal(count))
    observed = effect + noise * rng.standard_normal(count)
    post_var = 1.0 / (1.0 / noise**2 + 1.0 / tau**2)
    post_mean = post_var * observed / noise**2
    log_bf = log_bayes_factor_null(post_mean, np.sqrt(post_var), GAUSSIAN_DF, 0.0, tau, GAUSSIAN_DF)
    weights = null_share_posterior(log_bf, 0.5)
    assert float(weights @ NULL_SHARE_GRID) == pytest.approx(true_share, abs=0.05)
    claimed = np.array([null_probability(float(b), weights) for b in log_bf])
    for lo, hi in ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5)):
        in_bin = (claimed >= lo) & (claimed < hi)
        assert in_bin.sum() > 100
        frequency = null[in_bin].mean()
        error = 2.5 * np.sqrt(frequency * (1 - frequency) / in_bin.sum()) + 0.01
        assert frequency == pytest.approx(claimed[in_bin].mean(), abs=error), (lo, hi)


def test_beliefs_null_probability_follows_the_evidence():
    rng = np.random.default_rng(2)
    prior = BeliefPrior(effect_sd=0.75, empirical_bayes=False)
    clear, null, same = (Beliefs([Hypothesis("h", "cat")], prior=prior) for _ in range(3))
    clear.update([Observation(frozenset(), 0.1 * rng.standard_normal()) for _ in range(8)]
                 + [Observation(frozenset({"h"}), -1.0 + 0.1 * rng.standard_normal())
                    for _ in range(8)])
    null.update([Observation(frozenset(), 0.1 * rng.standard_normal()) for _ in range(40)]
                + [Observation(frozenset({"h"}), 0.1 * rng.standard_normal()) for _ in range(40)])
    h, base = frozenset({"h"}), frozenset()
    assert clear.null_probability(h, base) < 0.01
    assert null.null_probability(h, base) > 0.7
    assert same.null_probability(base, base) == 1.0  # a change that changes nothing
    off = Beliefs([Hypothesis("h", "cat")], prior=BeliefPrior(null_share=0.0))
    assert off.spike(h, base) is None and off.null_probability(h, base) == 0.0
    with pytest.raises(ValueError, match="null_share"):
        BeliefPrior(null_share=1.0)


def test_spike_prior_of_a_contrast_with_no_prior_spread_is_a_point():
    spike = SpikePrior(0.0, 0.0, 4.0, 10.0, null_share_posterior(np.zeros(0), 0.5))
    assert spike.null_probability(0.0, 0.0) == 1.0 and spike.null_probability(0.5, 0.1) == 0.0
