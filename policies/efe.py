"""The expected-free-energy policy.

efe(c, n) = -IG(c, n) - E_q[log p~(y)] + cost_weight * n * expected_seconds, in nats, LOWER IS
BETTER; neg_efe = -efe is maximised. IG = 0.5 log(1 + n r / h); Boltzmann preference
log p~(y) = log lambda - lambda y on the standardised metric, so E[log p~] = log lambda - lambda mu.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import Policy, check_positive, options, register
from policies.maths import (
    expected_free_energy,
    expected_log_preference,
    sample_index,
    softmax_probabilities,
)
from policies.types import StudyView


@register
@dataclass(frozen=True)
class EFEPolicy(Policy):
    """Chooses (hypothesis, n) with q(a) = softmax(-gamma efe(a)), drawn with the seeded rng;
    n is the efe-minimising number of runs up to what the keep rule can still use.
    Flags `epistemic`, `pragmatic`, `cost` drop a term (ablations)."""

    name = "efe"
    gamma: float = 8.0
    epistemic: bool = True
    pragmatic: bool = True
    cost: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("EFEPolicy", "gamma", self.gamma)

    def terms(self, view: StudyView, beliefs) -> dict[str, np.ndarray]:
        """Per option (see `options`), the efe-minimising n and its terms, all nats but n."""
        names = options(view)
        configs = [view.config_of(h) for h in names]
        mean = np.asarray(beliefs.to_standard(beliefs.posterior_mean(configs).mean), dtype=float)
        pragmatic = expected_log_preference(mean, self.preference)
        seconds = np.array([view.expected_seconds.get(h, 0.0) for h in names])
        most = np.array([self.runs_for(view, h) for h in names])
        best = {key: np.empty(len(names))
                for key in ("efe", "epistemic", "pragmatic", "cost", "n_runs")}
        best["efe"][:] = np.inf
        # Row k: n = k + 1 runs for every option (capped at its own most); one posterior solve
        # for all.
        n_grid = np.minimum(np.arange(1, int(most.max()) + 1)[:, None], most[None, :])
        info = np.asarray(beliefs.info_gain(configs, n_grid), dtype=float)
        for n_arr, epistemic in zip(n_grid, info):
            efe = expected_free_energy(epistemic, pragmatic, n_arr * seconds, self.cost_weight,
                                       use_epistemic=self.epistemic, use_pragmatic=self.pragmatic,
                                       use_cost=self.cost)
            better = efe < best["efe"]
            for key, value in (("efe", efe), ("epistemic", epistemic), ("pragmatic", pragmatic),
                               ("cost", self.cost_weight * n_arr * seconds), ("n_runs", n_arr)):
                best[key] = np.where(better, value, best[key])
        return best

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        """neg_efe per option (nats, higher is better)."""
        return -self.terms(view, beliefs)["efe"]

    def choose(self, view, beliefs, names, rng):
        terms = self.terms(view, beliefs)
        probabilities = softmax_probabilities(-terms["efe"], self.gamma)
        index = sample_index(probabilities, rng)
        chosen = {key: float(value[index]) for key, value in terms.items()}
        chosen["probability"] = float(probabilities[index])
        return index, chosen
