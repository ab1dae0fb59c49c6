"""The NIG algebra against dense closed forms, brute-force refits and Monte Carlo."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from beliefs.nig import (
    batch_info_gain_known_sigma,
    contrast_variance_after,
    info_gain_known_sigma,
    loo_predictive_params,
    nig_posterior,
)


def _problem(rng: np.random.Generator, n: int = 40, d: int = 6):
    rows = np.column_stack([np.ones(n), rng.integers(0, 2, size=(n, d - 1))]).astype(float)
    weights = rng.uniform(0.5, 2.0, size=n)
    z = rows @ rng.normal(size=d) + rng.normal(size=n) / np.sqrt(weights)
    prior_mean = rng.normal(size=d) * 0.3
    prior_precision = rng.uniform(0.5, 3.0, size=d)
    return rows, weights, z, prior_mean, prior_precision


def _fit(rows, weights, z, prior_mean, prior_precision, a0=1.5, b0=0.7):
    return nig_posterior((rows * weights[:, None]).T @ rows, rows.T @ (weights * z),
                         float(weights @ z**2), len(z), prior_mean, prior_precision, a0, b0)


def test_posterior_matches_dense_closed_form():
    rng = np.random.default_rng(1)
    rows, weights, z, mu0, p0 = _problem(rng)
    post = _fit(rows, weights, z, mu0, p0)
    # Textbook form with explicit inverses (fine as an independent reference).
    cov = np.linalg.inv(rows.T @ np.diag(weights) @ rows + np.diag(p0))
    mean = cov @ (rows.T @ (weights * z) + p0 * mu0)
    resid = z - rows @ mean
    b = 0.7 + 0.5 * (resid @ (weights * resid) + (mean - mu0) @ (p0 * (mean - mu0)))
    np.testing.assert_allclose(post.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(post.cov_diag(), np.diag(cov), rtol=1e-10)
    np.testing.assert_allclose(post.quad(rows[:5]),
                               np.einsum("ij,jk,ik->i", rows[:5], cov, rows[:5]), rtol=1e-10)
    assert post.a == pytest.approx(1.5 + 20)
    assert post.b == pytest.approx(b, rel=1e-10)


def test_loo_hat_identity_matches_refit_without_the_point():
    rng = np.random.default_rng(2)
    rows, weights, z, mu0, p0 = _problem(rng, n=25)
    post = _fit(rows, weights, z, mu0, p0)
    loc, scale, df = loo_predictive_params(z, rows @ post.mean, post.quad(rows), weights,
                                           post.a, post.b)
    for i in (0, 7, 24):
        keep = np.arange(len(z)) != i
        refit = _fit(rows[keep], weights[keep], z[keep], mu0, p0)
        r_i = refit.quad(rows[i:i + 1])[0]
        assert loc[i] == pytest.approx(rows[i] @ refit.mean, rel=1e-9)
        assert scale[i] == pytest.approx(np.sqrt(refit.b / refit.a * (1 / weights[i] + r_i)),
                                         rel=1e-9)
        assert df[i] == pytest.approx(2 * refit.a)


def test_loo_without_a_proper_predictive_has_a_nan_scale():
    """b_loo = b - w e^2 / (2(1 - k)) <= 0: the other runs cannot account for this residual."""
    z, fitted, r, weight = (np.array([3.0, 0.1]), np.array([0.0, 0.0]), np.array([0.5, 0.5]),
                            np.ones(2))
    loc, scale, df = loo_predictive_params(z, fitted, r, weight, a=2.0, b=1.0)
    assert np.isnan(scale[0]) and np.isfinite(scale[1]) and np.all(np.isfinite(loc))


def _mc_mutual_information(rng, prior_cov_rows, rows, h, sigma, draws):
    """Monte Carlo of I(beta; Y) = E[log p(Y | beta) - log p(Y)] for Y = rows beta + eps
    (Gaussian)."""
    k = len(rows)
    mu_cov = sigma**2 * prior_cov_rows                    # cov of rows @ beta
    mus = rng.multivariate_normal(np.zeros(k), mu_cov, size=draws)
    ys = mus + rng.normal(size=(draws, k)) * sigma * np.sqrt(h)
    log_lik = stats.norm.logpdf(ys, mus, sigma * np.sqrt(h)).sum(axis=1)
    log_marg = stats.multivariate_normal(
        np.zeros(k), mu_cov + sigma**2 * np.diag(np.broadcast_to(h, k))).logpdf(ys)
    ratio = log_lik - log_marg
    return ratio.mean(), ratio.std() / np.sqrt(draws)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_info_gain_matches_monte_carlo_within_two_percent(n):
    rng = np.random.default_rng(3 + n)
    rows, weights, z, mu0, p0 = _problem(rng, n=12)
    post = _fit(rows, weights, z, mu0, p0)
    x = np.array([[1.0, 1, 0, 0, 1, 0]])
    r = post.quad(x)[0]
    h = 0.6
    closed = float(info_gain_known_sigma(r, n, h))
    # n runs of the same config: rows repeated; prior cov of (x beta) repeated is r * ones.
    estimate, se = _mc_mutual_information(rng, np.full((n, n), r), np.repeat(x, n, axis=0), h,
                                          0.8, 400_000)
    assert se < 0.02 * closed / 3  # the 2% tolerance is at least 3 MC standard errors
    assert abs(estimate - closed) < 0.02 * closed


def test_batch_info_gain_matches_monte_carlo_and_single_form():
    rng = np.random.default_rng(11)
    rows, weights, z, mu0, p0 = _problem(rng, n=15)
    post = _fit(rows, weights, z, mu0, p0)
    batch = np.array([[1.0, 1, 0, 0, 0, 0], [1.0, 0, 1, 1, 0, 0], [1.0, 1, 0, 0, 0, 1]])
    whitened = post.whiten(batch)
    closed = batch_info_gain_known_sigma(whitened, 1.0)
    estimate, se = _mc_mutual_information(rng, whitened.T @ whitened, batch, 1.0, 1.3, 200_000)
    assert se < 0.02 * closed / 3
    assert abs(estimate - closed) < 0.02 * closed
    single = batch[:1]
    assert batch_info_gain_known_sigma(post.whiten(single), 2.0) == pytest.approx(
        float(info_gain_known_sigma(post.quad(single)[0], 1, 2.0)), rel=1e-12)


def test_info_gain_grows_with_n_and_shrinks_after_observing():
    rng = np.random.default_rng(5)
    rows, weights, z, mu0, p0 = _problem(rng, n=10)
    x = rows[:1]
    before = _fit(rows, weights, z, mu0, p0)
    gains = info_gain_known_sigma(before.quad(x)[0], np.arange(1, 6))
    assert np.all(np.diff(gains) > 0)
    more = np.vstack([rows, x, x])
    after = _fit(more, np.append(weights, [1.0, 1.0]), np.append(z, [0.1, -0.2]), mu0, p0)
    assert info_gain_known_sigma(after.quad(x)[0], 1) < info_gain_known_sigma(before.quad(x)[0], 1)


def test_contrast_variance_after_matches_a_refit_with_those_runs():
    """Var(c^T beta)/sigma^2 after n runs at each row = the same from the posterior refitted with
    them (the values y do not matter for a variance with sigma known)."""
    rng = np.random.default_rng(21)
    rows, weights, z, mu0, p0 = _problem(rng, n=12)
    post = _fit(rows, weights, z, mu0, p0)
    a, b = np.array([1.0, 1, 1, 0, 0, 0]), np.array([1.0, 1, 0, 0, 0, 0])
    contrast = a - b
    factor = post.whiten(np.vstack([a, b, contrast]))
    for counts in ((2, 1), (3, 0), (0, 4), (5, 2)):
        added = np.vstack([rows] + [a] * counts[0] + [b] * counts[1])
        refit = _fit(added, np.append(weights, np.ones(sum(counts))),
                     np.append(z, rng.normal(size=sum(counts))), mu0, p0)
        assert contrast_variance_after(factor.T @ factor, np.array(counts)) == pytest.approx(
            float(refit.quad(contrast[None, :])[0]), rel=1e-9)


def test_contrast_variance_after_one_parameter_closed_form():
    """One effect with variance v, n runs of it: v / (1 + n v)."""
    for v, n in ((0.5, 3), (2.0, 1), (0.1, 10)):
        gram = np.full((2, 2), v)
        assert contrast_variance_after(gram, np.array([n])) == pytest.approx(v / (1 + n * v),
                                                                             rel=1e-12)
    with pytest.raises(ValueError, match="counts must be >= 0"):
        contrast_variance_after(np.eye(2), np.array([-1]))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), first=st.integers(0, 6), second=st.integers(0, 6),
       extra=st.integers(1, 4))
def test_contrast_variance_after_never_grows_with_more_runs(seed, first, second, extra):
    rng = np.random.default_rng(seed)
    rows, weights, z, mu0, p0 = _problem(rng, n=8)
    post = _fit(rows, weights, z, mu0, p0)
    x = rows[rng.choice(len(rows), 2, replace=False)]
    factor = post.whiten(np.vstack([x, rng.normal(size=rows.shape[1])]))
    gram = factor.T @ factor
    now = contrast_variance_after(gram, np.array([first, second]))
    assert 0 <= now <= gram[-1, -1] * (1 + 1e-12)
    assert contrast_variance_after(gram, np.array([first + extra, second])) <= now * (1 + 1e-12)
    assert contrast_variance_after(gram, np.array([first, second + extra])) <= now * (1 + 1e-12)
