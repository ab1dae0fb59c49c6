"""The designed-experiment policy: screen many changes in every run, then confirm what is kept.

A linear model over indicator features is what designed experiments were made for: in a block of
N runs where each open change is on in half the runs, every main effect is estimated from all N
runs (variance about 4 sigma^2 / N), where one change at a time gives each change N / K runs.

Each step is one of:
- **Screening** (a "design" step): `block_runs` runs, each applying a subset of the open changes
  on top of the incumbent. The subsets come from random column-balanced blocks (each change on in
  half the runs, or, with `max_changes_per_run = c`, c changes per run with every change used
  about equally often); of `CANDIDATE_BLOCKS` such blocks drawn with the study's generator, the
  one with the most joint information about the model's parameters is run (D-optimality,
  `Beliefs.batch_info_gain` = 0.5 log det(I + X V X^T), unseen pairs counted at their prior
  interaction variance). Two changes that set the same key are never applied together.
- **Seed blocks** (with seed effects in the model, `seed_blocks`): `CANDIDATE_BLOCKS` split-plot
  blocks join the draw (`seed_blocked_block`), whose runs come in seed blocks that share one
  seed: the changes that keep little of a seed's luck are set per seed block, the rest vary
  within each. Every candidate is scored by the information about the parameters with the luck
  as correlated noise, 0.5 log det(H + X V X^T) - 0.5 log det(H), H = I + the luck's covariance
  (runs of one seed block share tau_seed^2 and the luck of the changes both apply); so a block
  is run in seed blocks where the pairing they give is worth more than spreading the runs.
- **Confirmation** (a trial step of a joint move "a + b + c"): the screened set S, applied
  together, against the incumbent, paired. The keep rule then judges the configuration that would
  be kept, d = mu(incumbent + S) - mu(incumbent), under the posterior that holds every screening
  and confirmation run and any interaction columns, so a change that helps only beside a partner
  is never kept without it, and an S that is worse together is not kept at all.

The screened set is a Bayesian false-discovery selection (Mueller, Parmigiani, Robert and
Rousseau, 2004), grown greedily (`screened_set`): with p_k = P(change k brings a gain within the
set S, i.e. incumbent + S beats incumbent + S without k) under the spike-and-slab posterior, add
changes in order of falling p while the mean of (1 - p_k) over S, its expected share of changes
that bring no gain, stays at most 1 - threshold: the claimed false-keep share per kept change is
the rule's stated confidence. With interactions modelled a pair may join at once where neither
change helps alone, which is how a synergy reaches the confirmation.

A confirmation is run when S is non-empty and P(incumbent + S better) already reaches the
threshold, or when only the runs of one confirmation are left; a block leaves room for one. When
nothing is screened and the runs left could not hold a block and a confirmation, they all go to
screening: nothing more can be kept, and the report shows what they found.

Crashes: a failed run informs no effect (it has no value), so no change is blamed for it; a
change whose every run failed (at least two, while runs without it succeeded) is left out of later
blocks and of S, and named in the step's reason; a set whose confirmation runs all failed (or
that has had `max_replicates` of them) is not confirmed again, but shrunk.

Runs in flight (with several workers, `StudyView.pending`): a block is scored by the information
it adds to them, 0.5 log det over the pending runs and the block less that over the pending runs
alone (the chain rule), so two blocks in flight complement each other instead of repeating one
another; a set whose confirmation is in flight is screened further, not confirmed twice; a
block leaves the runs of a confirmation whenever runs are in flight (what they show may call for
one), and waits rather than take them; the last confirmation waits until no run is in flight,
since what it confirms is what the study keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from policies.base import Policy, check_positive, register
from policies.keep import probability_better_than
from policies.types import Action, StudyView, joint_move, move_members, repeats_in_a_block

CANDIDATE_BLOCKS = 16  # random balanced blocks scored per screening step
SUB_PLOT_DRAWS = 4  # draws of a seed block's sub-plot runs before a candidate that repeats one
# configuration at a seed is given up


def balanced_block(changes: list[str], runs: int, per_run: int,
                   rng: np.random.Generator) -> list[frozenset[str]]:
    """`runs` subsets of `changes` in which every change is used about equally often: each in
    half the runs when per_run is 0 (a random column-balanced two-level design), else per_run
    changes per run (at most half of them, so that no run holds them all), the least used first
    (ties at random)."""
    if not per_run:
        columns = [rng.permutation(runs) < runs // 2 + (rng.random() < runs % 2 / 2)
                   for _ in changes]
        return [frozenset(c for c, column in zip(changes, columns) if column[i])
                for i in range(runs)]
    used = dict.fromkeys(changes, 0)
    block = []
    for _ in range(runs):
        order = sorted(changes, key=lambda c: (used[c], rng.random()))
        chosen = order[:min(per_run, max(1, len(changes) // 2))]
        for c in chosen:
            used[c] += 1
        block.append(frozenset(chosen))
    return block


def seed_blocked_block(changes: list[str], whole: list[str], runs: int, blocks: int, per_run: int,
                       rng: np.random.Generator) -> tuple[list[frozenset[str]], list[int]] | None:
    """A split-plot block: `runs` subsets of `changes` in `blocks` seed blocks of near-equal size
    (run i in seed block i mod blocks; a label per run). Without a cap (per_run = 0) the `whole`
    changes (whole-plot factors: those that keep little of a seed's luck, so pairing at a seed
    buys them little) are set per seed block, each in about half the blocks, and the others
    (sub-plot factors) are balanced within each block (each in about half its runs), so their
    differences there cancel the luck the block's runs share. With a cap there are no
    whole-plot factors: the runs of one capped `balanced_block` of every change are dealt to the
    seed blocks (a randomised block design). None where a seed block's runs repeat a
    configuration in SUB_PLOT_DRAWS draws (two runs at one seed would be duplicates)."""
    labels = [i % blocks for i in range(runs)]
    if per_run:
        for _ in range(SUB_PLOT_DRAWS):
            configs = balanced_block(changes, runs, per_run, rng)
            if not repeats_in_a_block(configs, labels):
                return configs, labels
        return None
    sub = [c for c in changes if c not in whole]
    empty: frozenset[str] = frozenset()
    configs = [empty] * runs
    parts = balanced_block(whole, blocks, 0, rng) if whole else [empty] * blocks
    for label, part in enumerate(parts):
        members = [i for i in range(runs) if labels[i] == label]
        for _ in range(SUB_PLOT_DRAWS):
            subsets = (balanced_block(sub, len(members), 0, rng) if sub
                       else [empty] * len(members))
            if len({part | subset for subset in subsets}) == len(members):
                break
        else:
            return None
        for i, subset in zip(members, subsets):
            configs[i] = part | subset
    return configs, labels


def without_conflicts(subset: frozenset[str], conflicts: frozenset[frozenset[str]],
                      rank: dict[str, int]) -> frozenset[str]:
    """`subset` less the later (by rank) of any two of its changes that set the same key."""
    kept: list[str] = []
    for name in sorted(subset, key=rank.__getitem__):
        if not any(frozenset((name, other)) in conflicts for other in kept):
            kept.append(name)
    return frozenset(kept)


def screened_set(changes: list[str], p_within: Callable[[tuple[str, ...], str], float],
                 threshold: float, conflicts: frozenset[frozenset[str]],
                 try_pairs: bool) -> list[str]:
    """The Bayesian false-discovery set, grown greedily: p_within(S, k) is the posterior
    probability that change k brings a gain within the set S (S applied beats S without k). Each
    round adds the change (or, where no single one qualifies and `try_pairs`, the pair of
    changes) with the highest P(better) that leaves every member of the set with P(better) > 1/2
    and the mean of 1 - P(better) over the set at most 1 - threshold; two changes that set the
    same key never go together. Without interactions each p_within is the change's own P(better)
    and this is the plain ranking rule."""
    chosen: tuple[str, ...] = ()
    while True:
        rest = [c for c in changes if c not in chosen]
        for group in ([(c,) for c in rest],
                      list(combinations(rest, 2)) if try_pairs else []):
            qualifying = []
            for added in group:
                members = (*chosen, *added)
                if any(frozenset(pair) in conflicts for pair in combinations(members, 2)):
                    continue
                p = [p_within(members, k) for k in members]
                if min(p) > 0.5 and np.mean([1.0 - v for v in p]) <= 1.0 - threshold:
                    qualifying.append((-min(p[len(chosen):]), added))
            if qualifying:
                chosen = (*chosen, *min(qualifying)[1])
                break
        else:
            return list(chosen)


def crash_suspects(view: StudyView, changes: list[str]) -> list[str]:
    """Changes whose every run failed (at least two) while a run without them succeeded."""
    suspects = []
    for name in changes:
        with_it = [r for r in view.history if name in r.config]
        fine_without = any(r.value is not None for r in view.history if name not in r.config)
        if len(with_it) >= 2 and fine_without and all(r.value is None for r in with_it):
            suspects.append(name)
    return suspects


@register
@dataclass(frozen=True)
class DesignPolicy(Policy):
    """Screening blocks of multi-change runs and confirmation of the screened set (module
    docstring).

    Args:
        block_runs: runs of one screening block.
        max_changes_per_run: most changes one run applies on top of the incumbent (0: no cap,
            each change in half the runs; 1: one change per run).
        seed_blocks: whether a block may run in seed blocks (split-plot candidates; off by
            default: on held-out synthetic worlds it gained nothing, README "Seed blocks");
            False scores only blocks whose runs are spread over the panel.
    """

    name = "design"
    block_runs: int = 8
    max_changes_per_run: int = 0
    seed_blocks: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("DesignPolicy", "block_runs", self.block_runs)
        check_positive("DesignPolicy", "max_changes_per_run", self.max_changes_per_run,
                       allow_zero=True)

    def score(self, view: StudyView, beliefs) -> np.ndarray:
        """Per open move: P(better) on the incumbent, the ranking the screened set grows by."""
        return np.array([probability_better_than(beliefs, view.config_of(m), view.incumbent,
                                                 self.keep_rule.epsilon)[0]
                         for m in view.candidates])

    def confirmable(self, view: StudyView, screened: list[str]) -> bool:
        """Whether incumbent + screened may be confirmed: fewer than max_replicates runs of it so
        far, and not at least two runs that all failed."""
        move = joint_move(screened)
        if view.runs_per_hypothesis.get(move, 0) >= self.keep_rule.max_replicates:
            return False
        runs = [r for r in view.history if r.config == view.config_of(move)]
        return len(runs) < 2 or any(r.value is not None for r in runs)

    @staticmethod
    def wait(view: StudyView, what: str) -> Action:
        """Wait for the runs in flight (a stop while steps are in flight is a wait)."""
        return Action("stop", None, 0, f"design: the runs left are kept for {what} on the "
                      f"evidence of the {len(view.pending)} runs in flight")

    def select(self, view: StudyView, beliefs, rng: np.random.Generator) -> Action:
        shared = self.shared_action(view, beliefs)
        if shared is not None:
            return shared
        singles = [m for m in view.candidates if len(move_members(m)) == 1]
        suspects = crash_suspects(view, singles)
        changes = [m for m in singles if m not in suspects]
        rule = self.keep_rule
        def p_within(members: tuple[str, ...], k: str) -> float:
            applied = view.incumbent | frozenset(members)
            return probability_better_than(beliefs, applied, applied - {k}, rule.epsilon)[0]

        screened = screened_set(changes, p_within, rule.threshold, view.conflicts,
                                try_pairs=beliefs.interactions)
        # A set whose confirmation runs all failed, or that has had max_replicates of them, is
        # not confirmed again: its last-added changes are dropped until what is left may be.
        while screened and not self.confirmable(view, screened):
            screened = screened[:-1]
        in_flight = bool(screened) and joint_move(screened) in view.in_flight
        confirm_runs = max((n + m for n, m in view.step_runs.values()), default=2)
        left = view.runs_left if view.runs_left is not None else self.block_runs + confirm_runs
        note = f"; left out, every run failed: {', '.join(suspects)}" if suspects else ""
        if screened:
            move = joint_move(screened)
            joint = probability_better_than(beliefs, view.config_of(move), view.incumbent,
                                            rule.epsilon)[0]
            claimed = float(np.mean([1.0 - p_within(tuple(screened), h) for h in screened]))
            if left <= confirm_runs and view.pending:
                return self.wait(view, "the last confirmation")
            if not in_flight and (joint >= rule.threshold or left <= confirm_runs):
                return Action("run", move, rule.min_replicates,
                              f"design: confirm {len(screened)} screened changes together "
                              f"(P(better) {joint:.3f}){note}",
                              {"p_better": joint, "screened": float(len(screened)),
                               "claimed_false_share": claimed})
        elif not changes:
            return Action("stop", None, 0, f"design: no change left to screen{note}")
        # Room for a confirmation after the block, unless nothing is screened or in flight and
        # the runs left could not hold both: then they all screen, and what they show is
        # reported. With runs in flight, what they show may call for a confirmation: its runs
        # are kept back, and a block that would need them waits.
        room = (left - confirm_runs if screened or view.pending or left >= 2 + confirm_runs
                else left)
        if room < 1:
            return self.wait(view, "a confirmation")
        runs = min(self.block_runs, room)
        pending = [r.config for r in view.pending]
        known = beliefs.batch_info_gain(pending) if pending else 0.0
        best: tuple[list[frozenset[str]], tuple[int, ...]] = ([], ())
        best_information = -np.inf
        for configs, blocks in self.candidate_blocks(view, beliefs, changes, runs, rng):
            # what the block adds to the runs in flight (the chain rule of the log det), each
            # of those at a seed of its own
            labels = [*range(-len(pending), 0), *blocks] if blocks else None
            information = beliefs.batch_info_gain(
                [*pending, *(view.incumbent | c for c in configs)], blocks=labels) - known
            if information > best_information:
                best, best_information = (configs, blocks), information
        grouped = f" in {len(set(best[1]))} seed blocks" if best[1] else ""
        return Action("design", None, runs,
                      f"design: screen {len(changes)} changes in {runs} runs{grouped} "
                      f"({len(screened)} screened so far){note}",
                      {"information": float(best_information), "screened": float(len(screened))},
                      configs=tuple(best[0]), blocks=best[1])

    def candidate_blocks(self, view: StudyView, beliefs, changes: list[str], runs: int,
                         rng: np.random.Generator
                         ) -> Iterator[tuple[list[frozenset[str]], tuple[int, ...]]]:
        """CANDIDATE_BLOCKS random balanced blocks, scored as if each run were at a seed of its
        own (`design_seeds` spreads them over the panel); then, with seed_blocks and seed
        effects in the model, up to CANDIDATE_BLOCKS split-plot ones (`seed_blocked_block`; a
        draw that repeats a configuration at a seed is dropped) with a random number of seed
        blocks (at least two runs each) and, without a cap, as whole-plot factors the k changes
        (k at random, up to half) whose category keeps the least of a seed's luck by the
        model's fitted scales. Two changes that set one key are never applied together."""
        rank = {name: i for i, name in enumerate(changes)}
        for _ in range(CANDIDATE_BLOCKS):
            yield [without_conflicts(subset, view.conflicts, rank)
                   for subset in balanced_block(changes, runs, self.max_changes_per_run, rng)], ()
        if not (self.seed_blocks and beliefs.seed_effects and runs >= 2):
            return
        scales = beliefs.seed_scales()
        category = {h.name: h.category for h in beliefs.hypotheses}
        own_luck = sorted(changes, key=lambda c: (-scales[category[c]], rng.random()))
        for _ in range(CANDIDATE_BLOCKS):
            blocks = int(rng.integers(1, runs // 2 + 1))
            cut = int(rng.integers(0, len(changes) // 2 + 1))
            whole = own_luck[:cut] if blocks > 1 and not self.max_changes_per_run else []
            drawn = seed_blocked_block(changes, whole, runs, blocks, self.max_changes_per_run, rng)
            if drawn is None:
                continue
            # of two changes that set one key, a whole-plot one stays (it is set per seed block)
            first = {name: i for i, name in enumerate([*whole, *(c for c in changes
                                                                 if c not in whole)])}
            configs = [without_conflicts(c, view.conflicts, first) for c in drawn[0]]
            if not repeats_in_a_block(configs, drawn[1]):
                yield configs, tuple(drawn[1])
