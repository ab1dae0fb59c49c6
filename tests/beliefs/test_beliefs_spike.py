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

KNOWN_NOISE = 1e13  # posterior shape a: sigma^2 known to ~1e-13 (relative)


def spike_log_bf(beliefs: Beliefs, a: frozenset[str], b: frozenset[str]) -> float:
    """log BF01 of mu(a) = mu(b) as `Beliefs` computes it for its keep decisions."""
    spike, diff = beliefs.spike(a, b), beliefs.difference(a, b)
    return float(log_bayes_factor_null(float(diff.mean), float(diff.scale) ** 2 / spike.noise_var,
                                       spike.prior_mean, spike.prior_quad, spike.noise_var,
                                       spike.posterior_a))


def null_evidence(z, design, prior_var, constraint, a0, b0) -> float:
    """log p(z) under H0: the Gaussian prior conditioned on constraint^T theta = 0, and the same
    noise prior as the slab's."""
    cov = np.diag(prior_var)
    along = cov @ constraint
    conditioned = cov - np.outer(along, along) / (constraint @ along)
    shape = b0 / a0 * (np.eye(len(z)) + design @ conditioned @ design.T)
    return float(stats.multivariate_t.logpdf(z, loc=np.zeros(len(z)), shape=shape, df=2 * a0))


def evidence(
    z: np.ndarray, design: np.ndarray, prior_var: np.ndarray, a0: float, b0: float
) -> float:
    """log p(z) nats for z = X theta + eps, theta | s2 ~ N(0, s2 diag(prior_var)), s2 ~ IG(a0, b0):
    the multivariate Student-t marginal t_{2 a0}(0, (b0/a0)(I + X diag(prior_var) X^T))."""
    shape = b0 / a0 * (np.eye(len(z)) + design @ np.diag(prior_var) @ design.T)
    return float(stats.multivariate_t.logpdf(z, loc=np.zeros(len(z)), shape=shape, df=2 * a0))


def test_the_bayes_factor_is_the_exact_evidence_ratio_of_the_conjugate_model():
    """H1: z = b0 + (delta + m_g) x + eps (the model's columns); H0: delta + m_g = 0, with the
    same noise prior sigma^2 ~ IG(a0, b0) under both."""
    rng = np.random.default_rng(4)
    prior = BeliefPrior(effect_sd=0.6, category_mean_sd=0.5, baseline_sd=3.0, noise_df=4.0,
                        noise_sd=1.0, empirical_bayes=False, standardisation=(0.0, 1.0))
    beliefs = Beliefs([Hypothesis("h", "cat")], prior=prior)
    applied = np.array([0, 0, 0, 1, 1, 1, 0, 1], dtype=float)
    z = 0.3 + 0.4 * applied + rng.standard_normal(len(applied))
    beliefs.update([Observation(frozenset({"h"} if x else set()), float(v))
                    for x, v in zip(applied, z)])
    a0, b0 = prior.noise_shape, prior.noise_rate
    design = np.column_stack([np.ones(len(z)), applied, applied])
    prior_var = np.array([prior.baseline_sd**2, prior.effect_sd**2, prior.category_mean_sd**2])
    slab = evidence(z, design, prior_var, a0, b0)
    null = null_evidence(z, design, prior_var, np.array([0.0, 1.0, 1.0]), a0, b0)
    assert spike_log_bf(beliefs, frozenset({"h"}), frozenset()) == pytest.approx(null - slab,
                                                                                 abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(ybar=st.floats(-3, 3), n=st.integers(1, 50), sigma=st.floats(0.1, 3), tau=st.floats(0.05, 5))
def test_with_known_noise_the_ratio_is_the_closed_form_bayes_factor(ybar, n, sigma, tau):
    """y_i ~ N(d, sigma^2): BF01 = N(ybar; 0, sigma^2/n) / N(ybar; 0, sigma^2/n + tau^2)."""
    post_var = 1.0 / (n / sigma**2 + 1.0 / tau**2)
    post_mean = post_var * n * ybar / sigma**2
    log_bf = log_bayes_factor_null(post_mean, post_var, 0.0, tau**2, 1.0, KNOWN_NOISE)
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
    # A pair move does nothing only if both changes do: prior mass share^2, not share.
    for log_bf in (-3.0, 0.0, 2.5):
        bf = np.exp(log_bf)
        assert null_probability(log_bf, weights, terms=2) == pytest.approx(
            share**2 * bf / (share**2 * bf + 1 - share**2))


def test_a_contrast_spans_the_changes_that_differ():
    beliefs = Beliefs([Hypothesis(n, "cat") for n in ("a", "b", "c")])
    beliefs.update([Observation(frozenset(), 0.0), Observation(frozenset(), 0.1),
                    Observation(frozenset({"a", "b"}), -0.2)])
    assert beliefs.spike(frozenset({"a", "b"}), frozenset()).terms == 2
    assert beliefs.spike(frozenset({"a", "b"}), frozenset({"a"})).terms == 1
    assert beliefs.spike(frozenset({"a", "c"}), frozenset({"b"})).terms == 3


def test_opposite_clear_effects_are_not_read_as_both_null():
    """a = -1 and b = +1, each clearly not null: their sum is near 0, but "both do nothing" can be
    no likelier than either alone."""
    rng = np.random.default_rng(5)
    beliefs = Beliefs([Hypothesis(n, "cat") for n in ("a", "b")])
    truth = {frozenset(): 0.0, frozenset({"a"}): -1.0, frozenset({"b"}): 1.0,
             frozenset({"a", "b"}): 0.0}
    beliefs.update([Observation(config, mean + 0.1 * rng.standard_normal())
                    for config, mean in truth.items() for _ in range(6)])
    both, base = frozenset({"a", "b"}), frozenset()
    singles = [beliefs.null_probability(frozenset({n}), base) for n in ("a", "b")]
    assert max(singles) < 1e-3
    assert beliefs.null_probability(both, base) <= min(singles) + 1e-12


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
    log_bf = log_bayes_factor_null(post_mean, post_var, 0.0, tau**2, 1.0, KNOWN_NOISE)
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
    spike = SpikePrior(0.0, 0.0, 4.0, 10.0, null_share_posterior(np.zeros(0), 0.5))  # q0 = 0
    assert spike.null_probability(0.0, 0.0) == 1.0 and spike.null_probability(0.5, 0.1) == 0.0


def test_the_bayes_factor_through_beliefs_is_exact_when_effects_spread_the_runs():
    """The production path: the data's own standardisation (replicate sd), runs spread by real
    effects far beyond the noise (sd of all runs / replicate sd well above 1), two hypotheses in
    one category. The spike's Bayes factor must be the evidence ratio of the model the posterior
    uses, computed here as two multivariate Student-t densities of the standardised runs (the
    old code mixed a noise prior widened by that spread with one that was not)."""
    rng = np.random.default_rng(11)
    prior = BeliefPrior(effect_sd=2.0, category_mean_sd=0.5, baseline_sd=3.0, noise_df=2.0,
                        empirical_bayes=False, hyper_uncertainty=False)
    beliefs = Beliefs([Hypothesis("h", "cat"), Hypothesis("k", "cat")], prior=prior)
    configs = [frozenset(), frozenset({"h"}), frozenset({"k"})] * 4
    effect = {"h": 0.3, "k": 4.0}  # k spreads the runs: 4 noise sd worse
    y = [1.0 + sum(effect[n] for n in c) + rng.standard_normal() for c in configs]
    beliefs.update([Observation(c, v) for c, v in zip(configs, y)])
    _, scale = beliefs.standardisation()
    assert np.std(y, ddof=1) / scale > 2  # g > 2: the case the old code got wrong
    z = np.asarray(beliefs.to_standard(np.array(y)))
    a0, b0 = prior.noise_shape, prior.noise_rate
    # columns: baseline, delta_h, delta_k, m_cat; the effect of h is delta_h + m_cat
    design = np.array([[1.0, "h" in c, "k" in c, len(c)] for c in configs])
    prior_var = np.array([prior.baseline_sd**2, prior.effect_sd**2, prior.effect_sd**2,
                          prior.category_mean_sd**2])
    slab = evidence(z, design, prior_var, a0, b0)
    null = null_evidence(z, design, prior_var, np.array([0.0, 1.0, 0.0, 1.0]), a0, b0)
    log_bf = spike_log_bf(beliefs, frozenset({"h"}), frozenset())
    assert float(log_bf) == pytest.approx(null - slab, abs=1e-8)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_look_ahead_with_a_transferred_prior_gives_a_finite_null_probability():
    """With a prior mean far from 0 (transferred from memory), a hypothetical posterior mean
    near 0 with today's b can break b + A > 0; the factor must stay finite (the known-noise
    limit there), not NaN, which read as P(null) = 0."""
    prior = BeliefPrior(effect_priors={"t": (-0.3, 0.05)})
    beliefs = Beliefs([Hypothesis("t", "cat")], prior=prior)
    rng = np.random.default_rng(0)
    beliefs.update([Observation(frozenset(), rng.normal(0, 0.1)) for _ in range(3)]
                   + [Observation(frozenset({"t"}), -0.15 + rng.normal(0, 0.1))
                      for _ in range(3)])
    spike = beliefs.spike(frozenset({"t"}), frozenset())
    for mean in (0.0, -0.01, -0.15, 0.2):
        for scale in (0.01, 0.05, 0.2):
            p_null = spike.null_probability(mean, scale)
            assert 0.0 <= p_null <= 1.0 and np.isfinite(p_null)
    ratio = log_bayes_factor_null(0.0, 1e-4, -0.3, 0.05, 0.01, 3.0)
    assert np.isfinite(ratio) and float(ratio) == pytest.approx(
        0.5 * np.log(0.05 / 1e-4) + 0.3**2 / (2 * 0.05) / 0.01)
