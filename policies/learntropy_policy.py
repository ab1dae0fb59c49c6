"""The learntropy policy: prefers the run whose outcome is expected to teach the most about the
candidate's effect, between boring (nothing left to learn) and incomprehensible (decoding failure).
Scores in nats, higher is better: learntropy - cost_weight * n * expected_seconds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.appraisal import learntropy
from policies.base import Policy, check_positive, options, register
from policies.maths import sample_index, softmax_probabilities
from policies.types import MoveMenu, StudyView


@register
@dataclass(frozen=True)
class LearntropyPolicy(Policy):
    """q(h) = softmax(gamma * score(h)) drawn with the seeded rng; kappa >= 1 weighs decoding
    failure."""

    name = "learntropy"
    gamma: float = 8.0
    kappa: float = 2.0
    cost: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("LearntropyPolicy", "gamma", self.gamma)
        if not (isinstance(self.kappa, (int, float)) and self.kappa >= 1):
            raise ValueError(f"LearntropyPolicy.kappa must be a number >= 1, got {self.kappa!r}")

    def moves(self, menu: MoveMenu) -> list[str]:
        """Singles only: learntropy is about one hypothesis's effect."""
        return menu.singles()

    def terms(self, view: StudyView, beliefs) -> dict[str, np.ndarray]:
        names = options(view)
        n_runs = np.array([self.runs_for(view, h) for h in names])
        value = np.array([learntropy(beliefs.projection(view.config_of(h), h), int(n), self.kappa)
                          for h, n in zip(names, n_runs)])
        seconds = np.array([view.expected_seconds.get(h, 0.0) for h in names])
        cost = self.cost_weight * n_runs * seconds if self.cost else np.zeros(len(names))
        return {"learntropy": value, "cost": cost, "n_runs": n_runs}

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        terms = self.terms(view, beliefs)
        return terms["learntropy"] - terms["cost"]

    def choose(self, view, beliefs, names, rng):
        terms = self.terms(view, beliefs)
        probabilities = softmax_probabilities(terms["learntropy"] - terms["cost"], self.gamma)
        index = sample_index(probabilities, rng)
        chosen = {key: float(value[index]) for key, value in terms.items()}
        chosen["probability"] = float(probabilities[index])
        return index, chosen
