"""Pure maths of the per-device terms: runs on several kinds of hardware.

A run on device k adds an offset e_k (a column of the model with the baseline's vague prior;
the first device seen has e = 0, so the baseline is its runs') and has noise variance
sigma^2 h_k, so a contrast between configurations is the same on every device. Every device has
an h, under one hyperprior, so that no device is privileged: the fit does not depend on which
device came first, but for the offsets' reference, whose prior is vague. With one device there
is no h (it would be sigma's).

The multipliers h_k are set by empirical Bayes (type-II MAP): with W = diag(1 / h_device(i)),
the evidence of the NIG model is a function of the weighted statistics X^T W X, X^T W u, u^T W u
and of (1/2) sum_i log w_i = -(1/2) sum_k n_k log h_k, so each device keeps its own statistics and
they are summed with weights 1/h_k for every trial value of h. The hyperprior is
log h_k ~ N(0, s^2) for every k (s = BeliefPrior.device_noise_sd), and the pooled scales tau
are refitted at every trial h: the fit maximises over log h the profile
  max_tau [log p(z | tau, h) + log p(tau)] + sum_k log N(log h_k; 0, s^2).
The uncertainty of h is not carried into the posterior (a plug-in, as for tau without the
Kass-Steffey term).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

LOG_MULTIPLIER_BOUNDS = (np.log(1e-3), np.log(1e3))


@dataclass
class DeviceMoments:
    """One device's share of the raw statistics, each run weighted by its own 1/h(c) only:
    X^T W X (gram), X^T W u (moment), u^T W u (sum_sq) and the number of runs (count)."""

    gram: np.ndarray
    moment: np.ndarray
    sum_sq: float = 0.0
    count: int = 0

    @classmethod
    def empty(cls, columns: int) -> DeviceMoments:
        return cls(np.zeros((columns, columns)), np.zeros(columns))

    def add(self, rows: np.ndarray, weights: np.ndarray, shifted: np.ndarray) -> None:
        self.gram += (rows * weights[:, None]).T @ rows
        self.moment += rows.T @ (weights * shifted)
        self.sum_sq += float(np.sum(weights * shifted**2))
        self.count += len(shifted)

    def pad(self) -> None:
        """One more column, zero for every run so far."""
        self.gram = np.pad(self.gram, ((0, 1), (0, 1)))
        self.moment = np.pad(self.moment, (0, 1))


def reweighted(gram: np.ndarray, moment: np.ndarray, sum_sq: float,
               devices: Sequence[DeviceMoments], multipliers: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The statistics of all runs with device k's runs weighted by 1/h_k on top of their own
    weights, from the totals at h = 1 and each device's share; and the change of sum_i log w_i,
    -sum_k n_k log h_k."""
    gram, moment = gram.copy(), moment.copy()
    for stats, h in zip(devices, multipliers):
        extra = 1.0 / h - 1.0
        gram += extra * stats.gram
        moment += extra * stats.moment
        sum_sq += extra * stats.sum_sq
    log_weight_change = -float(sum(stats.count * np.log(h)
                                   for stats, h in zip(devices, multipliers)))
    return gram, moment, sum_sq, log_weight_change


def fit_noise_multipliers(profile: Callable[[np.ndarray], float], n_devices: int,
                          log_sd: float) -> np.ndarray:
    """MAP-II noise multipliers h_k (dimensionless) of n_devices devices, given `profile(h)`:
    the log evidence, maximised over the pooled scales, at multipliers h (nats).

    Maximises profile(exp(x)) - sum_k x_k^2 / (2 s^2) over x = log h from x = 0 (no warm start,
    so the fit does not depend on the order of the updates), by L-BFGS-B with a
    finite-difference gradient."""

    def objective(x: np.ndarray) -> float:
        return -(profile(np.exp(x)) - float(np.sum(x**2)) / (2 * log_sd**2))

    result = optimize.minimize(objective, np.zeros(n_devices), method="L-BFGS-B",
                               bounds=[LOG_MULTIPLIER_BOUNDS] * n_devices,
                               options={"eps": 1e-5, "ftol": 1e-12, "gtol": 1e-7,
                                        "maxiter": 200})
    return np.exp(result.x)
