"""Pure maths of the conjugate Normal-inverse-gamma (NIG) linear model, standardised units.

Model: z = X beta + eps, eps ~ N(0, sigma^2 W^-1) (W = diag(1/h)),
beta | sigma^2 ~ N(mu0, sigma^2 P0^-1) with diagonal prior precision P0,
sigma^2 ~ InvGamma(a0, b0). Everything is computed from the
sufficient statistics G = X^T W X, q = X^T W z, s = z^T W z, n, with Cholesky factors only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.special import gammaln


@dataclass(frozen=True)
class NIGPosterior:
    """sigma^2 ~ IG(a, b); beta | sigma^2 ~ N(mean, sigma^2 V), V = (G + P0)^-1 + F F^T.

    (G + P0)^-1 is held as its Cholesky factor; the optional low-rank F (d x k, default none) adds
    the uncertainty of plugged-in hyperparameters (Kass-Steffey), in units of sigma^2."""

    mean: np.ndarray
    chol: np.ndarray  # lower-triangular L with L L^T = G + P0
    a: float
    b: float
    extra: np.ndarray | None = None  # F

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """V rhs, by two triangular solves (plus F F^T rhs)."""
        result = linalg.cho_solve((self.chol, True), rhs, check_finite=False)
        return result if self.extra is None else result + self.extra @ (self.extra.T @ rhs)

    def whiten(self, rows: np.ndarray) -> np.ndarray:
        """A factor B with B^T B = X V X^T for rows X (k x d): L^-1 X^T, stacked on F^T X^T."""
        rows = np.atleast_2d(rows)
        factor = linalg.solve_triangular(self.chol, rows.T, lower=True, check_finite=False)
        return factor if self.extra is None else np.vstack([factor, (rows @ self.extra).T])

    def quad(self, rows: np.ndarray) -> np.ndarray:
        """r_i = x_i^T V x_i for each row (dimensionless, variance in units of sigma^2)."""
        whitened = self.whiten(rows)
        return np.einsum("ij,ij->j", whitened, whitened)

    def cov_diag(self) -> np.ndarray:
        """diag(V), the effects' posterior variances in units of sigma^2."""
        # V = L^-T L^-1, so V_jj is the squared norm of column j of L^-1
        # (LAPACK trtri: fastest here).
        inverse_factor, info = linalg.lapack.dtrtri(self.chol, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"triangular inverse failed (LAPACK info={info})")
        diag = np.einsum("ij,ij->j", inverse_factor, inverse_factor)
        return diag if self.extra is None else diag + np.sum(self.extra**2, axis=1)

    @property
    def noise_var(self) -> float:
        """b / a, the scale^2 factor of every Student-t marginal (standardised units^2)."""
        return self.b / self.a


def nig_posterior(
    gram: np.ndarray,
    moment: np.ndarray,
    sum_sq: float,
    n_obs: float,
    prior_mean: np.ndarray,
    prior_precision: np.ndarray,
    a0: float,
    b0: float,
) -> NIGPosterior:
    """Conjugate update: Lambda = G + P0, m = Lambda^-1 (q + P0 mu0), a = a0 + n/2,
    b = b0 + (s + mu0^T P0 mu0 - m^T Lambda m)/2 (standardised units^2)."""
    precision = gram + np.diag(prior_precision)
    chol = linalg.cholesky(precision, lower=True, check_finite=False)
    rhs = moment + prior_precision * prior_mean
    mean = linalg.cho_solve((chol, True), rhs, check_finite=False)
    # s + mu0'P0 mu0 - m'Lambda m is a residual sum of squares: >= 0 up to rounding.
    residual = sum_sq + float(prior_mean @ (prior_precision * prior_mean)) - float(mean @ rhs)
    b = b0 + 0.5 * max(residual, 0.0)
    return NIGPosterior(mean=mean, chol=chol, a=float(a0 + 0.5 * n_obs), b=float(b))


def info_gain_known_sigma(
    r: np.ndarray, n: np.ndarray | int, h: np.ndarray | float = 1.0
) -> np.ndarray:
    """IG = 0.5 log(1 + n r / h) nats: mutual information between beta and n runs at a config."""
    return 0.5 * np.log1p(np.asarray(n, dtype=float) * np.asarray(r) / np.asarray(h, dtype=float))


def contrast_variance_after(gram: np.ndarray, counts: np.ndarray) -> float:
    """Var(c^T beta | sigma^2) / sigma^2 after counts_j more runs at each row x_j:
    g_cc - g_cx^T (diag(1/counts) + G_xx)^-1 g_xc, with gram = [x_1..x_k, c]^T V [x_1..x_k, c]
    (dimensionless). n runs at one config act as one run with noise variance sigma^2 / n."""
    counts = np.asarray(counts, dtype=float)
    if np.any(counts < 0):
        raise ValueError(f"contrast_variance_after: counts must be >= 0, got {counts!r}")
    run = np.flatnonzero(counts > 0)
    cross = gram[run, -1]
    system = gram[np.ix_(run, run)] + np.diag(1.0 / counts[run])
    return (float(gram[-1, -1] - cross @ np.linalg.solve(system, cross)) if run.size
            else float(gram[-1, -1]))


def batch_info_gain_known_sigma(whitened: np.ndarray, h: np.ndarray | float = 1.0) -> float:
    """IG = 0.5 log det(I + L^-1 X V X^T L^-T) nats for one run of each row of X, whose noise
    (units of sigma^2) has covariance H = L L^T: a scalar or a vector h is H = diag(h) (independent
    runs, IG = 0.5 log det(I + X V X^T / h)); a matrix is H itself, as when runs at one seed share
    its luck. This is the mutual information between the parameters and the runs' outcomes,
    0.5 log det(H + X V X^T) - 0.5 log det(H).

    `whitened` is a factor with X V X^T = whitened^T whitened (NIGPosterior.whiten)."""
    h = np.asarray(h, dtype=float)
    k = whitened.shape[1]
    if h.ndim == 2:
        scaled = linalg.solve_triangular(linalg.cholesky(h, lower=True, check_finite=False),
                                         whitened.T, lower=True, check_finite=False).T
    else:
        scaled = whitened / np.sqrt(h)
    gram = np.eye(k) + scaled.T @ scaled
    return float(np.sum(np.log(np.diag(linalg.cholesky(gram, lower=True, check_finite=False)))))


def loo_predictive_params(
    z: np.ndarray, fitted: np.ndarray, r: np.ndarray, weight: np.ndarray, a: float, b: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-out Student-t predictive of z_i (hyperparameters fixed), by the hat identity.

    leverage k = w r; mean = z - e/(1 - k) with e = z - fitted; r_loo = r/(1 - k);
    b_loo = b - w e^2 / (2(1 - k)); a_loo = a - 1/2; scale^2 = (b_loo/a_loo)(1/w + r_loo).
    Returns (mean, scale, df) in standardised units; scale is NaN where b_loo <= 0."""
    leverage = np.minimum(weight * r, 1.0 - 1e-12)
    residual = z - fitted
    keep = 1.0 - leverage
    a_loo = a - 0.5
    b_loo = b - 0.5 * weight * residual**2 / keep
    # b_loo <= 0: the other runs cannot account for this one's residual (too few of them), so it
    # has no proper leave-one-out predictive; NaN says so (a floor made infinite losses instead).
    b_loo = np.where(b_loo > 0, b_loo, np.nan)
    scale = np.sqrt(b_loo / a_loo * (1.0 / weight + r / keep))
    return z - residual / keep, scale, np.full_like(z, 2 * a_loo, dtype=float)


def log_marginal_likelihood(
    post: NIGPosterior,
    n_obs: float,
    sum_log_weight: float,
    prior_precision: np.ndarray,
    a0: float,
    b0: float,
) -> float:
    """log p(z) nats (standardised units)
    = -n/2 log 2pi + 1/2 sum log w + 1/2 log|P0| - 1/2 log|Lambda|
    + a0 log b0 - a log b + lgamma(a) - lgamma(a0)."""
    return float(
        -0.5 * n_obs * np.log(2 * np.pi) + 0.5 * sum_log_weight
        + 0.5 * np.sum(np.log(prior_precision))
        - np.sum(np.log(np.diag(post.chol))) + a0 * np.log(b0) - post.a * np.log(post.b)
        + gammaln(post.a) - gammaln(a0)
    )
