"""Pure maths of the spike-and-slab effect prior: most changes do nothing.

Prior on an effect d: with probability pi0 exactly 0 (the spike), else the conjugate model's
Gaussian (the slab). A contrast between configurations that differ in t changes is exactly 0 when
all t do nothing, with probability pi0^t (the indicators independent given pi0); its slab is the
joint slab of the t effects (any interaction terms stay in the slab), and its P(d = 0) is capped
at the least of the t changes' own (the sum's Bayes factor alone would read opposite effects as
all null; the joint Bayes factor is not computed). The share of null changes
pi0 ~ Beta(2 nu, 2 (1 - nu)) is learnt across hypotheses (nu = the prior guess; the Beta holds
two hypotheses' worth of weight).

The Bayes factor of the spike against the slab is exact for the conjugate model in which both
share one noise prior sigma^2 ~ IG(a0, b0): conditional on sigma, the Savage-Dickey ratio of the
Gaussian densities of d at 0, averaged over the slab posterior of sigma^2 (the conditional
Savage-Dickey ratio; checked against evidence ratios computed directly). With the Kass-Steffey
term of fitted scales on (the default), the posterior variance q carries it and the prior's q0
does not: that case is an approximation. Another
approximation: the hypotheses' spike indicators are treated as independent given pi0 (each one's
Bayes factor is computed in the joint slab model).
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
    post_mean, post_quad, prior_mean, prior_quad, noise_var, post_a
) -> np.ndarray:
    """log BF01 nats (> 0 favours the spike) of d = 0 against the slab, for d = c^T theta in the
    NIG model theta | sigma^2 ~ N(m, sigma^2 V), sigma^2 ~ IG(a, b), the same noise prior under
    both hypotheses.

    Given sigma, the ratio of d's posterior and prior Gaussian densities at 0 is
    sqrt(q0 / q) exp(-A / sigma^2), with q = c^T V_post c and q0 = c^T V_prior c (units of sigma^2)
    and A = mu^2 / (2 q) - mu0^2 / (2 q0) (mu, mu0 the posterior and prior means of d). Its
    expectation under the posterior sigma^2 ~ IG(a, b), b = a * noise_var, is
        BF01 = sqrt(q0 / q) * (b / (b + A))^a,
    and b + A is the posterior b of the model with d = 0, so it is positive. As a -> infinity it
    is the known-noise Bayes factor N(0; mu, s^2 q) / N(0; mu0, s^2 q0), s^2 = noise_var. Means
    in any unit u, noise_var in u^2, quads dimensionless."""
    post_quad, prior_quad = np.asarray(post_quad, dtype=float), np.asarray(prior_quad, dtype=float)
    excess = (np.asarray(post_mean) ** 2 / post_quad
              - np.asarray(prior_mean) ** 2 / prior_quad) / 2
    ratio = excess / (post_a * noise_var)
    # A hypothetical posterior (a look-ahead that moves the mean but keeps b) can break b + A > 0
    # when the prior mean is not 0; there the known-noise limit, -A / noise_var, stands in.
    valid = ratio > -1
    noise_part = np.where(valid, -post_a * np.log1p(np.where(valid, ratio, 0.0)),
                          -excess / noise_var)
    return np.asarray(0.5 * np.log(prior_quad / post_quad) + noise_part, dtype=float)


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


def null_probability(log_bf01: float, share_weights: np.ndarray, terms: int = 1) -> float:
    """P(d = 0 | data) = E_{pi0 | data}[pi0^t BF01 / (pi0^t BF01 + 1 - pi0^t)] (a probability),
    where d = 0 needs each of t changes to do nothing, independently given pi0 (t = 1 for one
    change; t = 2 for a pair move, whose spike mass is pi0^2, not pi0)."""
    if not math.isfinite(log_bf01):
        return 1.0 if log_bf01 > 0 else 0.0
    spike_mass = NULL_SHARE_GRID**terms
    spike = np.log(spike_mass) + log_bf01
    return float(np.sum(share_weights * np.exp(spike - _log_mixture(spike_mass, log_bf01))))


def _log_mixture(grid: np.ndarray, log_bf01: float) -> np.ndarray:
    """log(p BF01 + 1 - p), elementwise over the spike masses p in grid, without overflow."""
    return np.logaddexp(np.log(grid) + log_bf01, np.log1p(-grid))


@dataclass(frozen=True)
class SpikePrior:
    """The spike-and-slab prior of one contrast d (metric units): the slab's prior mean of d and
    its prior variance in units of sigma^2 (prior_quad), the posterior's estimate of sigma^2
    (noise_var = b/a, metric units^2) and shape a, and the posterior weights of the null share
    pi0 on NULL_SHARE_GRID; `terms` changes must all do nothing for d to be 0 (the hypotheses
    in which the two configurations differ), and P(d = 0) is at most `ceiling`, the least of
    their own P(null) (the Bayes factor here is the one-dimensional one of their sum)."""

    prior_mean: float
    prior_quad: float
    noise_var: float
    posterior_a: float
    share_weights: np.ndarray
    terms: int = 1
    ceiling: float = 1.0

    def null_probability(self, post_mean: float, post_scale: float) -> float:
        """P(d = 0 | data) given the slab posterior t_{2a}(post_mean, post_scale) of d, with
        post_scale^2 = noise_var * q (a posterior after other runs keeps noise_var)."""
        if post_scale <= 0 or self.prior_quad <= 0:
            return float(post_mean == 0)
        log_bf = log_bayes_factor_null(post_mean, post_scale**2 / self.noise_var,
                                       self.prior_mean, self.prior_quad, self.noise_var,
                                       self.posterior_a)
        return min(self.ceiling, null_probability(float(log_bf), self.share_weights, self.terms))
