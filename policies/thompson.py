"""The Thompson-sampling baseline: draw each candidate's mean from its posterior, run the lowest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import Policy, register
from policies.greedy import standardised_posterior_means
from policies.types import StudyView


@register
@dataclass(frozen=True)
class ThompsonPolicy(Policy):
    """`select` draws mu(c) ~ t_df(mean, scale) per option with the rng (marginal draws) and runs
    the lowest draw; `score` (deterministic) is -E[mu(c)], standardised."""

    name = "thompson"

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        return -standardised_posterior_means(view, beliefs)[0]

    def choose(self, view, beliefs, names, rng):
        mean, scale, df = standardised_posterior_means(view, beliefs)
        draws = mean + scale * rng.standard_t(df)
        index = int(np.argmin(draws))
        return index, {"draw": float(draws[index]), "mean": float(mean[index])}
