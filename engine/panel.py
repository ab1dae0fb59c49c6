"""The study's seed panel: which seed each planned run gets (pure functions of the state).

Run seeds come from a panel fixed per study: seeds offset + 0 .. offset + seed_panel - 1, the
offset drawn from the study seed. No configuration runs at one seed twice: in fixed-step mode the
trainer is deterministic, so a second run there would be a duplicate, not a replicate. A
configuration that has run at every panel seed goes on past the panel's end, in the same
sequence; each run's seed is in the ledger, so a replay plans every step exactly as the live
study did. A candidate runs first at the seeds its incumbent has run at, so the two share the
seed's luck and the incumbent runs only where it has no run yet; a kept change's runs are
runs of the new incumbent at their seeds (runs are looked up by configuration).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain, count, islice, takewhile

import numpy as np

from engine.config import StudySection
from policies import RunRecord

SEED_STREAM = 7  # the panel's offset comes from default_rng([study seed, SEED_STREAM])


def panel_seed(study: StudySection, index: int) -> int:
    """The index-th seed of the study's panel: indices below seed_panel are the panel, and a
    configuration that has run at all of them goes on in the same sequence."""
    offset = int(np.random.default_rng([study.seed, SEED_STREAM]).integers(0, 2**30))
    return offset + index


def seeds_run(runs: Sequence[RunRecord], applied: frozenset[str], step: int) -> set[int]:
    """The seeds the configuration `applied` has run at in the steps before `step`, crashed
    runs too."""
    return {r.seed for r in runs if r.config == applied and r.step < step}


def free_seeds(study: StudySection, runs: Sequence[RunRecord], applied: frozenset[str],
               step: int) -> Iterator[int]:
    """The seeds `applied` has not run at, in panel order and on past the panel's end."""
    used = seeds_run(runs, applied, step)
    return (s for s in (panel_seed(study, i) for i in count()) if s not in used)


def candidate_seeds(study: StudySection, runs: Sequence[RunRecord], incumbent: frozenset[str],
                    applied: frozenset[str], step: int, n: int) -> list[int]:
    """n seeds for runs of `applied` at `step`: those the incumbent has run at come first, so
    the incumbent's runs there pair with them at no cost, then the panel's order."""
    shared = sorted(seeds_run(runs, incumbent, step) - seeds_run(runs, applied, step))
    rest = (s for s in free_seeds(study, runs, applied, step) if s not in shared)
    return list(islice(chain(shared, rest), n))


def ratchet_seeds(study: StudySection, runs: Sequence[RunRecord], step: int, rule: str,
                  n: int) -> list[int]:
    """n seeds for the ratchet's runs at `step`: "fixed" puts every run at the panel's first
    seed (a config run twice there repeats its result); "fresh" gives each run a seed no run
    before `step` has used, in panel order."""
    if rule == "fixed":
        return [panel_seed(study, 0)] * n
    used = {r.seed for r in runs if r.step < step}
    return list(islice((s for s in (panel_seed(study, i) for i in count()) if s not in used), n))


def incumbent_seeds(runs: Sequence[RunRecord], incumbent: frozenset[str], step: int,
                    seeds: Sequence[int]) -> list[int]:
    """The seeds among `seeds` that the incumbent has no run at: where its runs would pair."""
    done = seeds_run(runs, incumbent, step)
    return [s for s in seeds if s not in done]


def design_seeds(study: StudySection, runs: Sequence[RunRecord], incumbent: frozenset[str],
                 configs: Sequence[frozenset[str]], step: int,
                 blocks: Sequence[int] = ()) -> list[int]:
    """One seed per run of a design block. Without `blocks`: for each configuration a panel seed
    it has not run at, the one the block has used least, then one the incumbent has run at, then
    panel order (past the panel's end only when none is left), so a block spreads over the panel
    and each seed's luck is seen by several configurations. With `blocks` (a label per run) the
    runs of one label share one seed, in the same order of preference among the panel seeds that
    none of them has run at and no other label has taken (else the first such seed past the
    panel's end), so their differences cancel what they share of its luck."""
    at_incumbent = seeds_run(runs, incumbent, step)
    panel_end = panel_seed(study, study.seed_panel)
    if blocks:
        chosen: dict[int, int] = {}
        for label in dict.fromkeys(blocks):
            members = [a for a, b in zip(configs, blocks) if b == label]
            used = set().union(*(seeds_run(runs, a, step) for a in members), chosen.values())
            free = (s for s in (panel_seed(study, i) for i in count()) if s not in used)
            chosen[label] = min(_options(free, panel_end),
                                key=lambda s: (s not in at_incumbent, s))
        return [chosen[b] for b in blocks]
    load: dict[int, int] = {}
    seeds: list[int] = []
    for applied in configs:
        taken = {s for a, s in zip(configs, seeds) if a == applied}
        free = (s for s in free_seeds(study, runs, applied, step) if s not in taken)
        seed = min(_options(free, panel_end),
                   key=lambda s: (load.get(s, 0), s not in at_incumbent, s))
        load[seed] = load.get(seed, 0) + 1
        seeds.append(seed)
    return seeds


def _options(free: Iterator[int], panel_end: int) -> list[int]:
    """The free panel seeds, in order; the first free seed past the panel's end when none is."""
    first = next(free)
    return [first, *takewhile(lambda s: s < panel_end, free)] if first < panel_end else [first]
