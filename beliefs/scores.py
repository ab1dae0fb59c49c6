"""Proper scores of a forecast of an effect, against the posterior of that effect.

A proposer (an LLM, or a person writing the config) may forecast a change's effect as a normal
N(mu_f, sigma_f^2), in the metric's units. The truth is unknown; the study's posterior of the
effect stands in for it, and each score is its expectation under that posterior. The posterior
is the spike-and-slab mixture of the beliefs: the effect is exactly 0 with probability p0, and
otherwise follows the slab, of mean m and variance v. Everything here is on the internal
lower-is-better scale, where "better" means an effect below -epsilon.
"""
from __future__ import annotations

import math


def expected_log_score(forecast_mean: float, forecast_sd: float, null_probability: float,
                       slab_mean: float, slab_variance: float) -> float:
    """E_post[log N(x; mu_f, sigma_f^2)] in nats (higher is better):

    -0.5 log(2 pi sigma_f^2) - (p0 mu_f^2 + (1 - p0) ((m - mu_f)^2 + v)) / (2 sigma_f^2).
    """
    if forecast_sd <= 0:
        raise ValueError(f"forecast_sd must be > 0, got {forecast_sd}")
    square = (null_probability * forecast_mean ** 2
              + (1.0 - null_probability) * ((slab_mean - forecast_mean) ** 2 + slab_variance))
    return -0.5 * math.log(2 * math.pi * forecast_sd ** 2) - square / (2 * forecast_sd ** 2)


def forecast_p_better(forecast_mean: float, forecast_sd: float, epsilon: float = 0.0) -> float:
    """The forecast's P(effect < -epsilon) = Phi((-epsilon - mu_f) / sigma_f)."""
    return 0.5 * math.erfc((forecast_mean + epsilon) / (forecast_sd * math.sqrt(2)))


def expected_brier(forecast_probability: float, posterior_probability: float) -> float:
    """E_post[(p_f - 1{better})^2] = p_f^2 - 2 p_f q + q, for the forecast's P(better) p_f and
    the posterior's q (lower is better; 0 is perfect)."""
    p, q = forecast_probability, posterior_probability
    return p * p - 2 * p * q + q
