"""The vanilla autoresearch ratchet: one run per hypothesis, keep it if that single result beats
the best single result so far (strictly: ties are discarded), else discard. It passes through the
not-yet-kept hypotheses in a random order and starts a new pass (retrying discarded ones) until
the budget is spent. It never re-runs the incumbent and never looks at the posterior."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import Policy, options, register
from policies.types import Decision, KeepRule, MoveMenu, StudyView

RATCHET_SEEDS = ("fresh", "fixed")


def best_single_result(view: StudyView) -> float | None:
    """The best (lowest) successful result of the incumbent's lineage: runs whose config is a
    subset of the incumbent (the baseline and every kept change). A discarded run can never be
    lower than the best at its time, so including later-kept configs' old runs is harmless."""
    values = [r.value for r in view.history if r.value is not None and r.config <= view.incumbent]
    return min(values) if values else None


@register
@dataclass(frozen=True)
class RatchetPolicy(Policy):
    """Picks uniformly among the open hypotheses with the fewest runs so far (sampling without
    replacement within a pass = a seed-shuffled pass, with no state kept); one run each.

    Args:
        ratchet_seed: where its runs' seeds come from. "fresh": every run at a seed no earlier
            run of the study used, so each comparison carries the full seed-to-seed noise.
            "fixed": every run at the panel's first seed, as autoresearch runs it (one seed for
            everything): its comparisons share that seed's luck, and it can overfit the seed.
    """

    name = "ratchet"
    ratchet_seed: str = "fresh"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ratchet_seed not in RATCHET_SEEDS:
            raise ValueError(f"RatchetPolicy.ratchet_seed must be one of {RATCHET_SEEDS}, "
                             f"got {self.ratchet_seed!r}")

    def seed_rule(self) -> str:
        return self.ratchet_seed

    def moves(self, menu: MoveMenu) -> list[str]:
        return menu.singles()

    def open_moves(self, menu: MoveMenu, beliefs) -> tuple[list[str], frozenset[str]]:
        """Every move: a discarded hypothesis comes back in the next pass."""
        return self.moves(menu), frozenset()

    def incumbent_runs(self, requested: int) -> int:
        """None: the ratchet compares single results with the best so far."""
        return 0

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        """-(runs so far): the hypotheses not yet tried in this pass score highest."""
        return -np.array([view.runs_per_hypothesis.get(h, 0) for h in options(view)], dtype=float)

    def runs_for(self, view: StudyView, hypothesis: str) -> int:
        return 1

    def decide(self, view: StudyView, beliefs, hypothesis: str,
               rule: KeepRule | None = None) -> Decision:
        """Keep iff the latest single result of incumbent|{hypothesis} < the best so far."""
        config = view.config_of(hypothesis)
        n_runs = view.runs_per_hypothesis.get(hypothesis, 1)
        latest = next((r for r in reversed(view.history)
                       if r.config == config and r.role == "candidate"), None)
        if latest is None:
            raise ValueError(f"ratchet.decide: no run of {hypothesis!r} "
                             f"on incumbent {sorted(view.incumbent)} "
                             "in the history")
        if latest.value is None:
            return Decision("revert", None, None, n_runs, f"run failed ({latest.status})")
        best = best_single_result(view)
        if best is None:
            return Decision("keep", None, None, n_runs, "no successful earlier result to beat")
        if latest.value < best:
            return Decision("keep", None, None, n_runs,
                            f"{latest.value:.6g} < best so far {best:.6g}")
        return Decision("revert", None, None, n_runs,
                        f"{latest.value:.6g} >= best so far {best:.6g}")
