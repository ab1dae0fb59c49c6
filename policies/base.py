"""The policy interface, the registry, and the steps every policy shares (budget, stopping).

Sign convention: `efe` is in nats and LOWER IS BETTER; `neg_efe = -efe` is maximised, and every
`score` is "higher is better" (neg_efe for the efe policy). Policies are frozen dataclasses with
no mutable state: the engine hands them a `StudyView` each step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any, ClassVar

import numpy as np

from policies.keep import decide, probability_better_than
from policies.maths import argmax_random_tie, expected_improvement
from policies.types import Action, Decision, KeepRule, MoveMenu, StudyView, move_members, pair_move

POLICIES: dict[str, type[Policy]] = {}

# Every key of the [policy] config section (besides `kind`), plus the [decision] section's rule.
POLICY_PARAMETERS = ("gamma", "preference", "cost_weight", "epistemic", "pragmatic", "cost",
                     "kappa", "ucb_beta", "block_runs", "max_changes_per_run", "seed_blocks",
                     "ratchet_seed", "keep_rule")


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make the policy available to `make_policy` under `cls.name`."""
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str, **params: Any) -> Policy:
    """The policy registered as `name`, built from [policy] config values; each policy takes the
    parameters it uses and ignores the rest of the section (so one section serves every kind)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)}")
    unknown = sorted(set(params) - set(POLICY_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown policy parameter(s) {unknown} for {name!r}; "
                         f"allowed: {list(POLICY_PARAMETERS)}")
    cls = POLICIES[name]
    accepted = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in params.items() if key in accepted})


def check_positive(owner: str, key: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise a ValueError naming `key` unless `value` is a finite number > 0 (>= 0 if allowed)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{owner}.{key} must be a finite number "
                         f"{'>= 0' if allow_zero else '> 0'}, got {value!r}")


def options(view: StudyView) -> list[str]:
    """The moves a policy may run: the open candidates (undecided ones among them)."""
    return list(view.candidates)


def incumbent_observed(view: StudyView) -> bool:
    """Whether the incumbent configuration has at least one successful run."""
    return any(r.config == view.incumbent and r.value is not None for r in view.history)


def metric_per_standard_unit(beliefs) -> float:
    """Metric units per standardised unit of the current standardisation (> 0)."""
    return float(beliefs.from_standard(1.0) - beliefs.from_standard(0.0))


@dataclass(frozen=True)
class Policy:
    """Base: scores candidates (higher is better), turns scores into an Action, decides keeps.

    `select` first handles what every policy shares: stop when the budget is spent or nothing is
    open, re-run an incumbent that has no successful run, and (when runs cost nats, cost_weight > 0)
    stop when no candidate's expected improvement, preference * E[max(0, -epsilon - d)] in nats
    (d = mu_cand - mu_inc, standardised), is worth the runs' cost."""

    name: ClassVar[str]
    keep_rule: KeepRule = KeepRule()
    preference: float = 1.0  # lambda, nats per standardised unit of metric
    cost_weight: float = 0.0  # nats per expected second of running

    def __post_init__(self) -> None:
        check_positive(type(self).__name__, "preference", self.preference)
        check_positive(type(self).__name__, "cost_weight", self.cost_weight, allow_zero=True)
        if not isinstance(self.keep_rule, KeepRule):
            raise ValueError(f"{type(self).__name__}.keep_rule must be a KeepRule, "
                             f"got {self.keep_rule!r}")

    # -- to be provided by each policy --------------------------------------------------------
    def score(self, view: StudyView, beliefs) -> np.ndarray:
        """One score per hypothesis in `options(view)`; higher is better."""
        raise NotImplementedError

    def choose(self, view: StudyView, beliefs, names: list[str],
               rng: np.random.Generator) -> tuple[int, dict[str, float]]:
        """Index into `names` and the terms behind it; default: argmax of `score`, ties at
        random."""
        scores = self.score(view, beliefs)
        index = argmax_random_tie(scores, rng)
        return index, {"score": float(scores[index])}

    # -- which moves are open, and how a trial is paired (overridden by the ratchet) ----------
    def seed_rule(self) -> str:
        """Where runs' seeds come from: "panel" (engine.panel: the study's seed panel, each
        candidate at its incumbent's seeds); the ratchet's "fresh" and "fixed" are its own."""
        return "panel"

    def moves(self, menu: MoveMenu) -> list[str]:
        """Every move not yet in the incumbent: each hypothesis, then pairs of reverted ones.

        With interactions modelled, two changes that do nothing alone may help together, a
        synergy no single move can reach; a pair move tries both at once. Policies that score
        one effect rather than a configuration (learntropy, the ratchet) offer singles only."""
        singles = menu.singles()
        if not menu.interactions:
            return singles
        reverted = sorted(name for name in singles if name in menu.closed)
        return singles + [pair_move(a, b) for a, b in combinations(reverted, 2)]

    def open_moves(self, menu: MoveMenu, beliefs) -> tuple[list[str], frozenset[str]]:
        """(the moves open to a trial, the reverted ones among them reopened for a new trial).

        A move with max_replicates runs (over all its trials) is not open: the keep rule's cap on
        the runs one change may take. A reverted move is tried again, as a new trial that goes on
        from its earlier runs and looks:
        - with interactions modelled, when it was reverted on an older incumbent: its pairs with
          the newly kept changes are unseen, so it may help now;
        - once nothing else is open, when the posterior no longer calls it worse (P(better) >
          1 - threshold, as the other changes' runs moved the pooled estimates). Not a move whose
          every run crashed: its P(better) is still the prior's, and more runs would crash
          again."""
        cap = self.keep_rule.max_replicates
        moves = [move for move in self.moves(menu) if menu.runs.get(move, 0) < cap]
        reverted = {move: menu.closed[move] for move in moves if move in menu.closed}
        reopened = {move for move, trial in reverted.items()
                    if menu.interactions and trial.incumbent != menu.incumbent}
        if not reopened and len(reverted) == len(moves):
            floor = 1.0 - self.keep_rule.threshold
            reopened = {move for move, trial in reverted.items()
                        if trial.judged and probability_better_than(
                            beliefs, menu.incumbent | move_members(move), menu.incumbent,
                            self.keep_rule.epsilon)[0] > floor}
        return [m for m in moves if m not in menu.closed or m in reopened], frozenset(reopened)

    def incumbent_runs(self, requested: int) -> int:
        """Incumbent runs to pair with each trial step: the [study] setting."""
        return requested

    # -- shared --------------------------------------------------------------------------------
    def runs_for(self, view: StudyView, hypothesis: str) -> int:
        """Runs to ask for: what the keep rule could still use, within the runs left (>= 1)."""
        wanted = max(1, self.keep_rule.max_replicates - view.runs_per_hypothesis.get(hypothesis, 0))
        if view.runs_left is not None:
            wanted = min(wanted, max(1, view.runs_left))
        return wanted

    def planned_runs(self, view: StudyView, move: str) -> tuple[int, int]:
        """(candidate, paired incumbent) runs a step of `move` makes, within what the keep rule
        can still use; without the engine's plan, the keep rule's remaining runs, unpaired."""
        most = self.runs_for(view, move)
        n, m = view.step_runs.get(move, (most, 0))
        return min(n, most), min(m, n, most)

    def shared_action(self, view: StudyView, beliefs) -> Action | None:
        """What every policy does first, or None: stop when the budget is spent or nothing is
        open, re-run an incumbent that has no successful run, and (cost_weight > 0) stop when
        no candidate's expected improvement is worth its cost."""
        if view.runs_left is not None and view.runs_left < 1:
            return Action("stop", None, 0, "budget spent: no runs left")
        if view.seconds_left is not None and view.seconds_left <= 0:
            return Action("stop", None, 0, "budget spent: no seconds left")
        names = options(view)
        if not names:
            return Action("stop", None, 0, "no open candidates")
        if not incumbent_observed(view):
            return Action("rerun_incumbent", None, self.keep_rule.min_replicates,
                          "the incumbent has no successful run to compare against")
        if self.cost_weight > 0:
            value, cost = self.improvement_value(view, beliefs, names)
            if np.all(value <= cost):
                best = int(np.argmax(value - cost))
                return Action("stop", None, 0,
                              f"no candidate's expected improvement justifies its cost "
                              f"(best: {names[best]} "
                              f"{value[best]:.4g} nats <= {cost[best]:.4g} nats)",
                              {"improvement": float(value[best]), "cost": float(cost[best])})
        return None

    def select(self, view: StudyView, beliefs, rng: np.random.Generator) -> Action:
        """The next action; the scored choice is drawn with `rng` where the policy is random."""
        shared = self.shared_action(view, beliefs)
        if shared is not None:
            return shared
        names = options(view)
        index, terms = self.choose(view, beliefs, names, rng)
        hypothesis = names[index]
        n_runs = int(terms.pop("n_runs", self.runs_for(view, hypothesis)))
        reason = (f"{self.name}: best of {len(names)} open" if len(names) > 1
                  else f"{self.name}: last open")
        if hypothesis == view.open_hypothesis:
            reason = f"{self.name}: continue undecided {hypothesis}"
        return Action("run", hypothesis, n_runs, reason, terms)

    def improvement_value(self, view: StudyView, beliefs,
                          names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(value, cost) in nats per option: value = preference * E[max(0, -epsilon - d)] with
        d = mu(incumbent|{h}) - mu(incumbent) standardised (0 with the spike's probability);
        cost = cost_weight * n * seconds."""
        unit = metric_per_standard_unit(beliefs)
        value, cost = np.empty(len(names)), np.empty(len(names))
        for i, h in enumerate(names):
            d = beliefs.difference(view.config_of(h), view.incumbent)
            gain = expected_improvement(d.mean, d.scale, d.df, -self.keep_rule.epsilon)
            gain = gain * (1.0 - beliefs.null_probability(view.config_of(h), view.incumbent))
            value[i] = self.preference * float(gain) / unit
            cost[i] = self.cost_weight * self.runs_for(view, h) * view.expected_seconds.get(h, 0.0)
        return value, cost

    def decide(self, view: StudyView, beliefs, hypothesis: str,
               rule: KeepRule | None = None) -> Decision:
        """The posterior keep rule on incumbent|{hypothesis} against the incumbent; `rule`
        overrides the policy's own keep rule (the engine passes the [decision] section)."""
        return decide(beliefs, view.config_of(hypothesis), view.incumbent, rule or self.keep_rule,
                      view.runs_per_hypothesis.get(hypothesis, 0))
