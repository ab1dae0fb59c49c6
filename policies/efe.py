"""The expected-free-energy policy.

efe(c) = -IG(c) - E_q[log p~(y)] + cost_weight * (n + m) * expected_seconds, in nats, LOWER IS
BETTER; neg_efe = -efe is maximised. The plan scored is the one a step of c will run: n
candidate runs and m paired incumbent runs (`StudyView.step_runs`). IG is what those runs tell
about the keep decision's quantity d = mu(incumbent + c) - mu(incumbent),
0.5 log(Var(d) / Var(d | runs)) (policies.maths.decision_information); Boltzmann preference
log p~(y) = log lambda - lambda y on the standardised metric, so E[log p~] = log lambda - lambda mu.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import Policy, check_positive, options, register
from policies.maths import (
    decision_information,
    expected_free_energy,
    expected_log_preference,
    sample_index,
    softmax_probabilities,
)
from policies.types import StudyView


@register
@dataclass(frozen=True)
class EFEPolicy(Policy):
    """Chooses a move with q(a) = softmax(-gamma efe(a)), drawn with the seeded rng, scoring the
    runs its step will make. Flags `epistemic`, `pragmatic`, `cost` drop a term (ablations)."""

    name = "efe"
    gamma: float = 8.0
    epistemic: bool = True
    pragmatic: bool = True
    cost: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("EFEPolicy", "gamma", self.gamma)

    def terms(self, view: StudyView, beliefs) -> dict[str, np.ndarray]:
        """Per option (see `options`), the planned runs and the terms of their efe, nats."""
        names = options(view)
        configs = [view.config_of(h) for h in names]
        mean = np.asarray(beliefs.to_standard(beliefs.posterior_mean(configs).mean), dtype=float)
        pragmatic = expected_log_preference(mean, self.preference)
        seconds = np.array([view.expected_seconds.get(h, 0.0) for h in names])
        planned = [self.planned_runs(view, h) for h in names]
        epistemic = np.array([
            decision_information(
                beliefs.difference_variance_after(config, view.incumbent, (0, 0)),
                beliefs.difference_variance_after(config, view.incumbent, runs))
            for config, runs in zip(configs, planned)])
        runs = np.array([n + m for n, m in planned], dtype=float)
        cost = self.cost_weight * runs * seconds
        efe = expected_free_energy(epistemic, pragmatic, runs * seconds, self.cost_weight,
                                   use_epistemic=self.epistemic, use_pragmatic=self.pragmatic,
                                   use_cost=self.cost)
        return {"efe": efe, "epistemic": epistemic, "pragmatic": pragmatic, "cost": cost,
                "n_runs": np.array([n for n, _ in planned], dtype=float)}

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
