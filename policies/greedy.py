"""The greedy baseline: run the candidate with the best (lowest) predicted mean."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import Policy, options, register
from policies.types import StudyView


def standardised_posterior_means(
    view: StudyView, beliefs
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, df) of mu(incumbent|{h}) per option, standardised units."""
    configs = [view.config_of(h) for h in options(view)]
    posterior = beliefs.posterior_mean(configs)
    unit = float(beliefs.from_standard(1.0) - beliefs.from_standard(0.0))
    mean = np.asarray(beliefs.to_standard(posterior.mean), dtype=float)
    return (mean, np.asarray(posterior.scale, dtype=float) / unit,
            np.asarray(posterior.df, dtype=float))


@register
@dataclass(frozen=True)
class GreedyPolicy(Policy):
    """score = -E[mu(c)] (standardised; higher is better); argmax, ties at random."""

    name = "greedy"

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        return -standardised_posterior_means(view, beliefs)[0]
