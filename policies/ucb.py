"""The UCB baseline on a lower-is-better metric: optimism is a LOWER confidence bound."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import Policy, check_positive, register
from policies.greedy import standardised_posterior_means
from policies.types import StudyView


@register
@dataclass(frozen=True)
class UCBPolicy(Policy):
    """score = -(E[mu(c)] - ucb_beta * scale[mu(c)]), standardised (scale: the Student-t scale,
    finite for any df); argmax, ties at random."""

    name = "ucb"
    ucb_beta: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("UCBPolicy", "ucb_beta", self.ucb_beta)

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        mean, scale, _ = standardised_posterior_means(view, beliefs)
        return -(mean - self.ucb_beta * scale)
