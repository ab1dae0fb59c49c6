"""Pure maths of policies/: closed forms against Monte Carlo, signs, stability, properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from beliefs.spike import NULL_SHARE_GRID, SpikePrior
from policies.maths import (
    alpha_spent,
    argmax_random_tie,
    compression_progress_from_losses,
    effect_variance_after,
    expected_free_energy,
    expected_improvement,
    expected_log_preference,
    info_gain,
    keep_value,
    learntropy_nig,
    probability_better,
    sample_index,
    sequential_boundaries,
    softmax_probabilities,
    student_t_entropy,
)


def nig_learntropy_monte_carlo(a, v_jj, cov_jc, r, h, n, kappa, draws, rng):
    """Brute force: draw sigma^2 ~ IG(a, b), the n outcomes' residual sum of squares given sigma^2
    (chi2_n), update b, and average the realised dH_+ - kappa dH_-."""
    b = 1.0
    sigma_sq = b / rng.gamma(a, 1.0, draws)
    b_after = b + 0.5 * sigma_sq * rng.chisquare(n, draws)
    a_after = a + 0.5 * n
    v_after = effect_variance_after(v_jj, cov_jc, r, h, n)
    reduction = (student_t_entropy(np.sqrt(b * v_jj / a), 2 * a)
                 - student_t_entropy(np.sqrt(b_after * v_after / a_after), 2 * a_after))
    values = np.where(reduction >= 0, reduction, kappa * reduction)
    return values.mean(), values.std() / math.sqrt(draws)


def test_efe_sign_more_informative_is_lower_at_equal_means():
    pragmatic = expected_log_preference(np.array([0.3, 0.3]), 1.0)
    epistemic = info_gain(np.array([0.05, 0.5]), 2)
    efe = expected_free_energy(epistemic, pragmatic, np.zeros(2), 0.0)
    assert efe[1] < efe[0]


def test_efe_sign_better_mean_is_lower_at_equal_information():
    # the second predicts a lower metric
    pragmatic = expected_log_preference(np.array([0.5, -0.5]), 2.0)
    efe = expected_free_energy(info_gain(np.array([0.2, 0.2]), 2), pragmatic, np.zeros(2), 0.0)
    assert efe[1] < efe[0]
    assert efe[0] - efe[1] == pytest.approx(2.0 * 1.0)  # lambda * (difference of means)


def test_efe_cost_and_flags():
    efe = expected_free_energy(1.0, -2.0, 10.0, 0.1)
    assert efe == pytest.approx(-1.0 + 2.0 + 1.0)
    assert expected_free_energy(1.0, -2.0, 10.0, 0.1, use_epistemic=False) == pytest.approx(3.0)
    assert expected_free_energy(1.0, -2.0, 10.0, 0.1, use_pragmatic=False) == pytest.approx(0.0)
    assert expected_free_energy(1.0, -2.0, 10.0, 0.1, use_cost=False) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cost_weight"):
        expected_free_energy(1.0, 0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="preference"):
        expected_log_preference(0.0, 0.0)


def test_softmax_is_stable_for_huge_gamma_and_seeded():
    scores = np.array([-3.0, 5.0, 4.999, -np.inf])
    probabilities = softmax_probabilities(scores, 1e6)
    assert np.all(np.isfinite(probabilities)) and probabilities[1] == pytest.approx(1.0)
    assert probabilities[3] == 0.0
    soft = softmax_probabilities(np.array([0.0, 0.1, 0.2]), 1.0)
    first = [sample_index(soft, np.random.default_rng(7)) for _ in range(5)]
    again = [sample_index(soft, np.random.default_rng(7)) for _ in range(5)]
    assert first == again
    rng = np.random.default_rng(3)
    counts = np.bincount([sample_index(soft, rng) for _ in range(20000)], minlength=3) / 20000
    assert np.allclose(counts, soft, atol=4 * np.sqrt(0.25 / 20000))


def test_softmax_rejects_bad_input():
    with pytest.raises(ValueError, match="gamma"):
        softmax_probabilities(np.array([0.0]), 0.0)
    with pytest.raises(ValueError, match="nan"):
        softmax_probabilities(np.array([0.0, np.nan]), 1.0)
    with pytest.raises(ValueError, match="every score is -inf"):
        softmax_probabilities(np.array([-np.inf]), 1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20), st.floats(1e-6, 1e9))
def test_softmax_sums_to_one_and_keeps_order(scores, gamma):
    s = np.array(scores)
    p = softmax_probabilities(s, gamma)
    assert p.sum() == pytest.approx(1.0)
    assert np.all(p >= 0)
    order = np.argsort(s)
    assert np.all(np.diff(p[order]) >= -1e-12)


def test_argmax_ties_are_broken_at_random():
    rng = np.random.default_rng(0)
    picks = {argmax_random_tie(np.array([1.0, 3.0, 3.0, 0.0]), rng) for _ in range(50)}
    assert picks == {1, 2}


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-6, 1e3), st.integers(1, 50), st.floats(1e-3, 1e3))
def test_info_gain_grows_with_runs_and_r(r, n, h):
    assert info_gain(r, n + 1, h) > info_gain(r, n, h) > 0
    assert info_gain(2 * r, n, h) > info_gain(r, n, h)
    assert info_gain(r, n, h) == pytest.approx(0.5 * math.log(1 + n * r / h))


def test_student_t_entropy_against_scipy():
    from scipy import stats

    for scale, df in [(0.3, 2.0), (1.0, 5.0), (2.5, 60.0)]:
        assert student_t_entropy(scale, df) == pytest.approx(stats.t(df, scale=scale).entropy(),
                                                             rel=1e-10)


@pytest.mark.parametrize("a, v_jj, n", [(1.0, 0.25, 1), (1.0, 0.25, 2), (2.0, 1.0, 3),
                                        (1.5, 1e-3, 1), (4.0, 4.0, 1)])
def test_learntropy_closed_form_matches_monte_carlo(a, v_jj, n):
    rng = np.random.default_rng(11)
    exact = learntropy_nig(a, v_jj, v_jj, v_jj + 0.01, 1.0, n, 2.0)
    estimate, se = nig_learntropy_monte_carlo(a, v_jj, v_jj, v_jj + 0.01, 1.0, n, 2.0, 200_000, rng)
    assert abs(exact - estimate) < 4 * se + 1e-4


def test_learntropy_regimes_boring_noise_dominated_and_between():
    kappa = 2.0
    # Well known: the effect pinned down (v_jj tiny) and the noise known from ~400 runs.
    boring = learntropy_nig(200.0, 1e-4, 1e-4, 1e-4 + 1e-3, 1.0, 2, kappa)
    # Noise-dominated: the run's noise (h = 400) swamps the effect's uncertainty; noise poorly
    # known.
    noisy = learntropy_nig(1.5, 0.25, 0.25, 0.26, 400.0, 2, kappa)
    between = learntropy_nig(1.5, 0.25, 0.25, 0.26, 1.0, 2, kappa)
    assert abs(boring) < 0.01
    assert noisy < 0  # decoding failure outweighs the little there is to learn
    assert between > 10 * abs(boring) and between > 0.1
    # Along the noise axis the value falls from the informative run to the noise-dominated one.
    path = [learntropy_nig(1.5, 0.25, 0.25, 0.26, h, 2, kappa)
            for h in (0.1, 1.0, 10.0, 100.0, 400.0)]
    assert all(later < earlier for earlier, later in zip(path, path[1:]))


def test_learntropy_kappa_one_is_the_mean_reduction_and_kappa_penalises():
    from scipy import special

    a, v, n = 1.5, 0.2, 2
    mean = learntropy_nig(a, v, v, v, 1.0, n, 1.0)
    assert learntropy_nig(a, v, v, v, 1.0, n, 3.0) < mean
    v_after = effect_variance_after(v, v, v, 1.0, n)
    direct = (student_t_entropy(math.sqrt(v / a), 2 * a)
              - student_t_entropy(math.sqrt(v_after / (a + 1)), 2 * a + 2)
              + 0.5 * (special.digamma(a) - special.digamma(a + 1)))
    assert mean == pytest.approx(float(direct))
    with pytest.raises(ValueError, match="kappa"):
        learntropy_nig(a, v, v, v, 1.0, n, 0.5)


def test_expected_improvement_matches_monte_carlo():
    rng = np.random.default_rng(5)
    mean, scale, df, target = 0.2, 0.5, 6.0, -0.1
    draws = mean + scale * rng.standard_t(df, 400_000)
    mc = np.maximum(target - draws, 0.0)
    assert float(expected_improvement(mean, scale, df, target)) == pytest.approx(
        mc.mean(), abs=4 * mc.std() / 632)


def test_probability_better():
    assert probability_better(0.0, 1.0, 10.0, 0.0) == pytest.approx(0.5)
    assert probability_better(-1.0, 0.0, 10.0, 0.5) == 1.0


def test_keep_value_by_hand():
    """d ~ N(0, 1) now, sd 0.6 after the runs (so the next mean m' ~ N(0, 0.8^2)), no spike.
    At threshold 1/2 the keep is m' < 0 and the value is the knowledge gradient of a choice
    between 0 and d, E[max(0, -m')] = 0.8 phi(0) = 0.8 / sqrt(2 pi). At 0.95 the keep needs
    m' <= -0.6 z, z = 1.644854: value 0.8 phi(0.6 z / 0.8) = 0.8 exp(-1.521855^2 / 2) / sqrt(2 pi)
    (the mean is 0, so the -mean Phi term vanishes)."""
    gaussian = 1e13  # df: the Student-t is the normal
    assert keep_value(0.0, 1.0, 0.6, gaussian, 0.5 + 1e-12, 0.0) == pytest.approx(0.3191538, 1e-6)
    assert keep_value(0.0, 1.0, 0.6, gaussian, 0.95, 0.0) == pytest.approx(0.1491182, 1e-6)
    # A hopeless change, and runs that tell nothing, are worth nothing; a known good one its gain.
    assert keep_value(3.0, 0.5, 0.3, gaussian, 0.95, 0.0) < 1e-6
    assert keep_value(-0.5, 1.0, 1.0, gaussian, 0.95, 0.0) == 0.0
    assert keep_value(-5.0, 1.0, 1.0, gaussian, 0.95, 0.0) == pytest.approx(5.0)
    # More runs are worth more (a wider preposterior of the verdict).
    assert (keep_value(0.1, 1.0, 0.8, gaussian, 0.95, 0.0)
            < keep_value(0.1, 1.0, 0.5, gaussian, 0.95, 0.0))


def spike_at(prior_scale, share=0.5):
    """P(d = 0 | slab posterior N(m, s^2)) for a slab N(0, prior_scale^2) and a known null share."""
    weights = np.zeros(len(NULL_SHARE_GRID))
    weights[int(np.argmin(np.abs(NULL_SHARE_GRID - share)))] = 1.0
    return SpikePrior(0.0, prior_scale**2, 1.0, 1e13, weights).null_probability


@pytest.mark.parametrize("mean", [-0.25, -0.12, -0.05, 0.05])
def test_keep_value_with_a_spike_matches_monte_carlo(mean):
    """Draw d from the current spike-and-slab posterior, the new runs' mean given d, update the
    slab posterior, apply the keep rule to the spike-and-slab P(better) after the runs, and
    average the true gain -d of the keeps: the value, simulated."""
    rng = np.random.default_rng(23)
    scale, scale_after, threshold, draws = 0.1, 0.06, 0.95, 40_000
    null_at = spike_at(0.3)
    claimed = keep_value(mean, scale, scale_after, 1e13, threshold, 0.0, null_at)
    null = rng.random(draws) < null_at(mean, scale)
    effect = np.where(null, 0.0, mean + scale * rng.standard_normal(draws))
    added = 1 / scale_after**2 - 1 / scale**2
    new_mean = effect + rng.standard_normal(draws) / math.sqrt(added)
    mean_after = scale_after**2 * (mean / scale**2 + added * new_mean)
    p_after = np.array([(1 - null_at(m, scale_after)) * stats.norm.cdf(-m / scale_after)
                        for m in mean_after])
    gain = np.where(p_after >= threshold, -effect, 0.0)
    assert claimed == pytest.approx(gain.mean(), abs=4 * gain.std() / math.sqrt(draws) + 1e-4)


def test_compression_progress_from_losses():
    progress = compression_progress_from_losses
    assert progress(np.array([1.0, 2.0]), np.array([0.5, 2.5])) == pytest.approx(0.0)
    assert progress(np.array([1.0]), np.array([0.25])) == pytest.approx(0.75)
    assert np.isnan(progress(np.array([np.inf, 1.0]), np.array([np.inf, 0.5])))
    with pytest.raises(ValueError, match="same observations"):
        compression_progress_from_losses(np.zeros(2), np.zeros(3))


def test_sequential_boundaries_match_published_lan_demets_values():
    # gsDesign(k = 4, test.type = 1, alpha = 0.025, sfu = sfLDOF): 4.3326 2.9631 2.3590 2.0141.
    bounds = sequential_boundaries(0.025, [0.25, 0.5, 0.75, 1.0], "obrien_fleming")
    assert bounds == pytest.approx([4.3326, 2.9631, 2.3590, 2.0141], abs=2e-4)
    # One look: the fixed-sample one-sided test.
    assert sequential_boundaries(0.05, [1.0])[0] == pytest.approx(1.6448536, abs=1e-6)
    # Pocock-type spending: nearly constant boundaries, above the fixed-sample 1.96 at alpha 0.025.
    pocock = sequential_boundaries(0.025, [0.25, 0.5, 0.75, 1.0], "pocock")
    assert np.ptp(pocock) < 0.05 and 2.3 < pocock.min()


def test_alpha_spent_endpoints_and_validation():
    for spending in ("obrien_fleming", "pocock"):
        assert alpha_spent(0.05, 0.0, spending) == 0.0
        assert alpha_spent(0.05, 1.0, spending) == pytest.approx(0.05)
        assert alpha_spent(0.05, 0.3, spending) < alpha_spent(0.05, 0.6, spending)
    with pytest.raises(ValueError, match="spending"):
        alpha_spent(0.05, 0.5, "linear")
    with pytest.raises(ValueError, match="fractions"):
        sequential_boundaries(0.05, [0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="fractions"):
        sequential_boundaries(0.05, [0.5, 0.9])


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_sequential_boundaries_hold_the_overall_error_by_monte_carlo(spending):
    """Gaussian sequential test under the null: Z_k = S_k / sqrt(n_k), S a sum of N(0, 1) draws,
    looks after every run from 2 to 8 (the keep rule's default design)."""
    alpha, looks, paths = 0.05, np.arange(2, 9), 200_000
    bounds = sequential_boundaries(alpha, looks / looks[-1], spending)
    rng = np.random.default_rng(17)
    sums = np.cumsum(rng.standard_normal((paths, looks[-1])), axis=1)[:, looks - 1]
    crossed = sums / np.sqrt(looks) >= bounds
    se = math.sqrt(alpha * (1 - alpha) / paths)
    assert crossed.any(axis=1).mean() == pytest.approx(alpha, abs=4 * se)
    # Each look spends its share of alpha:
    # P(first crossing at look k) = alpha*(t_k) - alpha*(t_{k-1}).
    first = np.argmax(crossed, axis=1)[crossed.any(axis=1)]
    spent = np.diff([alpha_spent(alpha, t, spending)
                     for t in np.concatenate([[0.0], looks / looks[-1]])])
    assert np.bincount(first, minlength=len(looks)) / paths == pytest.approx(spent, abs=4 * se)
    # Looking less often (every second run) with the same boundaries never exceeds alpha.
    subset = crossed[:, ::2].any(axis=1).mean()
    assert subset <= alpha + 4 * se and subset < crossed.any(axis=1).mean()
