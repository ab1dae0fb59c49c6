"""The random baseline: a uniformly random open candidate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import Policy, options, register
from policies.types import StudyView


@register
@dataclass(frozen=True)
class RandomPolicy(Policy):
    """Every option scores 0; the argmax's random tie-break makes the choice uniform."""

    name = "random"

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        return np.zeros(len(options(view)))
