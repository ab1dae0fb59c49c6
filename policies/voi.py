"""The value-of-information policy: runs go where a keep decision is worth resolving.

A step's runs are worth the true gain they let the keep rule realise (policies.maths.keep_value):
    value(c, k) = E[-d 1{the look after k more steps of c keeps}],  d = mu(incumbent + c) -
    mu(incumbent), metric units,
with the slab sd of d after k steps of the planned runs (n candidate, m paired incumbent runs
each, `StudyView.step_runs`) from the exact posterior variance
(`Beliefs.difference_variance_after`). The score is the best value per run over horizons k,
    score(c) = max_k value(c, k) / (k (n + m)),
the knowledge gradient's KG(*) form: a one-step value undervalues a change that needs several
steps to be decided, and dividing by the runs compares plans of different sizes. This is
best-arm identification for a thresholded keep: a change likely to be good whose verdict is
still open scores highest; a hopeless change, or one whose verdict the runs cannot move, scores
about 0, so the budget concentrates on the few promising changes. The look is valued at the
rule's `threshold`; a group-sequential rule's stricter early boundaries are not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from policies.base import Policy, options, register
from policies.keep import probability_better_than
from policies.maths import argmax_random_tie, keep_value
from policies.types import StudyView

HORIZONS = (1, 2, 4, 8)  # steps looked ahead; geometric, as the value per run is smooth in k


@register
@dataclass(frozen=True)
class VOIPolicy(Policy):
    """Chooses the move with the most keep value per run (module docstring), ties at random."""

    name = "voi"

    def values(self, view: StudyView, beliefs) -> tuple[np.ndarray, np.ndarray]:
        """Per option: (the best keep value per run, metric units per run; its horizon in
        steps)."""
        rule = self.keep_rule
        best, horizon = np.zeros(len(options(view))), np.zeros(len(options(view)))
        for i, move in enumerate(options(view)):
            config = view.config_of(move)
            _, diff, null_at = probability_better_than(beliefs, config, view.incumbent,
                                                       rule.epsilon)
            mean, scale = float(np.asarray(diff.mean)), float(np.asarray(diff.scale))
            df = float(np.asarray(diff.df))
            n, m = self.planned_runs(view, move)
            room = max(1, (rule.max_replicates - view.runs_per_hypothesis.get(move, 0)) // n)
            if view.runs_left is not None:
                room = min(room, max(1, view.runs_left // (n + m)))
            now = beliefs.difference_variance_after(config, view.incumbent, (0, 0))
            for k in [k for k in HORIZONS if k <= room] or [1]:
                after = beliefs.difference_variance_after(config, view.incumbent, (k * n, k * m))
                shrink = math.sqrt(after / now) if now > 0 else 1.0
                value = keep_value(mean, scale, scale * shrink, df, rule.threshold,
                                   rule.epsilon, null_at) / (k * (n + m))
                if value > best[i]:
                    best[i], horizon[i] = value, k
        return best, horizon

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        """Keep value per run (metric units per run; higher is better)."""
        return self.values(view, beliefs)[0]

    def choose(self, view, beliefs, names, rng):
        value, horizon = self.values(view, beliefs)
        index = argmax_random_tie(value, rng)
        return index, {"value": float(value[index]), "horizon": float(horizon[index]),
                       "n_runs": float(self.planned_runs(view, names[index])[0])}
