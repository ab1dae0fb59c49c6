"""Pure maths of the spike-and-slab effect prior: most changes do nothing.

Prior on an effect (or any contrast) d: with probability pi0 exactly 0 (the spike), else the
conjugate model's Gaussian (the slab). The share of null changes pi0 ~ Beta(2 nu, 2 (1 - nu)) is
learnt across hypotheses (nu = the prior guess; the Beta holds two hypotheses' worth of weight).

The Bayes factor of the spike against the slab is the Savage-Dickey density ratio at d = 0 of
the conjugate model's Student-t marginals (exact when the null's prior on the noise is the slab's
given d = 0). One approximation: the hypotheses' spike indicators are treated as independent given
pi0 (each one's Bayes factor is computed in the joint slab model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Cells over pi0 for the posterior of the null share: each cell carries its exact prior mass (the
# Beta density can be infinite at 0 or 1) and the likelihood at its midpoint.
NULL_SHARE_EDGES = np.linspace(0.0, 1.0, 401)
NULL_SHARE_GRID = (NULL_SHARE_EDGES[:-1] + NULL_SHARE_EDGES[1:]) / 2


def log_bayes_factor_null(
    post_mean, post_scale, post_df, prior_mean, prior_scale, prior_df
) -> np.ndarray:
    """log BF01 = log t_{post_df}(0; m, s) - log t_{prior_df}(0; m0, s0) nats (Savage-Dickey: the
    posterior over the prior density of d at 0, both Student-t marginals of the NIG model). > 0
    favours the spike. Exact when the null's noise prior is the slab's given d = 0 (Dickey 1971)."""
    return np.asarray(stats.t.logpdf(0.0, post_df, post_mean, post_scale)
                      - stats.t.logpdf(0.0, prior_df, prior_mean, prior_scale), dtype=float)


def null_share_posterior(log_bf01: np.ndarray, prior_null_share: float) -> np.ndarray:
    """Weights of p(pi0 | data) on the cells of NULL_SHARE_GRID (sum to 1):
    p(pi0 | data) ∝ Beta(pi0; 2 nu, 2 (1 - nu)) * prod_j (pi0 BF01_j + 1 - pi0)."""
    if not 0 < prior_null_share < 1:
        raise ValueError(f"prior_null_share must be in (0, 1), got {prior_null_share!r}")
    grid = NULL_SHARE_GRID
    with np.errstate(divide="ignore"):  # a cell can hold no prior mass in float64
        log_weight = np.log(np.diff(stats.beta.cdf(NULL_SHARE_EDGES, 2 * prior_null_share,
                                                   2 * (1 - prior_null_share))))
    for log_bf in np.atleast_1d(np.asarray(log_bf01, dtype=float)):
        log_weight = log_weight + _log_mixture(grid, log_bf)
    weight = np.exp(log_weight - np.max(log_weight))
    return weight / weight.sum()


def null_probability(log_bf01: float, share_weights: np.ndarray) -> float:
    """P(d = 0 | data) = E_{pi0 | data}[pi0 BF01 / (pi0 BF01 + 1 - pi0)] (a probability)."""
    if not math.isfinite(log_bf01):
        return 1.0 if log_bf01 > 0 else 0.0
    spike = np.log(NULL_SHARE_GRID) + log_bf01
    return float(np.sum(share_weights * np.exp(spike - _log_mixture(NULL_SHARE_GRID, log_bf01))))


def _log_mixture(grid: np.ndarray, log_bf01: float) -> np.ndarray:
    """log(pi0 BF01 + 1 - pi0), elementwise over grid, without overflow."""
    return np.logaddexp(np.log(grid) + log_bf01, np.log1p(-grid))


@dataclass(frozen=True)
class SpikePrior:
    """The spike-and-slab prior of one contrast d (metric units): the slab's Student-t marginal
    t_{prior_df}(prior_mean, prior_scale), the posterior's df, and the posterior weights of the
    null share pi0 on NULL_SHARE_GRID."""

    prior_mean: float
    prior_scale: float
    prior_df: float
    posterior_df: float
    share_weights: np.ndarray

    def null_probability(self, post_mean: float, post_scale: float) -> float:
        """P(d = 0 | data) given the slab posterior t_{posterior_df}(post_mean, post_scale) of d."""
        if post_scale <= 0 or self.prior_scale <= 0:
            return float(post_mean == 0)
        log_bf = log_bayes_factor_null(post_mean, post_scale, self.posterior_df,
                                       self.prior_mean, self.prior_scale, self.prior_df)
        return null_probability(float(log_bf), self.share_weights)
