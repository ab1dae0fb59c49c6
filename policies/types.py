"""Value types shared by the policies and the engine: the study view, actions, decisions, the
keep rule.

Sign convention: `efe` is in nats and LOWER IS BETTER; `neg_efe = -efe` is maximised. Metric values
here are lower-is-better (the engine negates a higher-is-better metric before they arrive).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from train.vocabulary import FinalVerdict, Role, Verdict

# How the keep threshold is spread over the looks at one hypothesis (policies.keep):
# "none" = the posterior threshold at every look; the others are group-sequential designs.
KEEP_SPENDING = ("none", "obrien_fleming", "pocock")

# A move applies one hypothesis, or several at once (a pair "a + b", a screened set "a + b + c"),
# to the incumbent.
# Hypothesis names match [A-Za-z0-9_.-]+ (engine.proposer), so the joiner cannot occur in one.
PAIR_JOINER = " + "

# The unit of every term a policy reports with its action (Action.terms), declared once: the
# report plots each unit on its own axis.
TERM_UNITS: dict[str, str] = {
    **dict.fromkeys(("efe", "epistemic", "pragmatic", "cost", "learntropy", "information",
                     "improvement"), "nats"),
    **dict.fromkeys(("probability", "p_better", "claimed_false_share"), "probability"),
    **dict.fromkeys(("n_runs", "horizon", "screened"), "count"),
    "value": "metric units per run",
    **dict.fromkeys(("draw", "mean"), "standardised metric"),
    "score": "score (the policy's own scale)",
}


def pair_move(first: str, second: str) -> str:
    """The name of the move that applies both hypotheses (order-free)."""
    return joint_move((first, second))


def joint_move(names) -> str:
    """The name of the move that applies every one of `names` at once (order-free): a
    screened set's confirmation (policies.design), or a pair."""
    return PAIR_JOINER.join(sorted(set(names)))


def move_members(move: str) -> frozenset[str]:
    """The hypotheses a move applies: {move} for a single hypothesis, every one of a joint
    move."""
    return frozenset(move.split(PAIR_JOINER))


ActionKind = Literal["run", "design", "rerun_incumbent", "stop"]


@dataclass(frozen=True)
class RunRecord:
    """One finished run as the ledger holds it; `value` is None for a failed run."""

    config: frozenset[str]
    value: float | None
    status: str
    seed: int
    step: int
    role: Role  # "base" | "candidate" | "incumbent"
    slot: int = 0  # its place in the step's plan: runs of a step may finish in any order
    device: str | None = None  # the hardware it ran on (engine.rules.device_label)


@dataclass(frozen=True)
class ClosedTrial:
    """A move's latest final verdict, the step it came at, the incumbent it was tried on, and
    whether the posterior judged it (False when every run of the trial crashed)."""

    verdict: FinalVerdict
    step: int
    incumbent: frozenset[str]
    judged: bool


@dataclass(frozen=True)
class MoveMenu:
    """What a policy needs to say which moves are open: the known hypotheses (declaration
    order), the incumbent, each move's latest closed trial, whether interactions are modelled,
    and each move's candidate runs over all its trials."""

    hypotheses: tuple[str, ...]
    incumbent: frozenset[str]
    closed: Mapping[str, ClosedTrial]
    interactions: bool
    runs: Mapping[str, int] = field(default_factory=dict)

    def singles(self) -> list[str]:
        """Every hypothesis not yet in the incumbent, in declaration order."""
        return [name for name in self.hypotheses if name not in self.incumbent]


@dataclass(frozen=True)
class StudyView:
    """The read-only facts a policy sees each step (policies hold no state of their own)."""

    incumbent: frozenset[str]
    candidates: list[str]  # moves still open: hypothesis names, and pair moves "a + b"
    history: list[RunRecord] = field(default_factory=list)
    runs_per_hypothesis: dict[str, int] = field(default_factory=dict)
    runs_left: int | None = None
    seconds_left: float | None = None
    expected_seconds: dict[str, float] = field(default_factory=dict)  # one run of incumbent|{h}
    open_hypothesis: str | None = None  # an undecided candidate under evaluation
    # per move: (candidate runs, paired incumbent runs) that a step of it would make
    step_runs: dict[str, tuple[int, int]] = field(default_factory=dict)
    # pairs of hypotheses that set a common key: never applied together
    conflicts: frozenset[frozenset[str]] = frozenset()
    # the moves of trial steps still in flight (not offered again), and the runs planned in
    # the steps in flight and not settled yet (value None): what a batch choice conditions on
    in_flight: frozenset[str] = frozenset()
    pending: list[RunRecord] = field(default_factory=list)

    def config_of(self, move: str) -> frozenset[str]:
        """The configuration a move tries: the incumbent with the move's hypotheses applied."""
        return self.incumbent | move_members(move)


def repeats_in_a_block(configs: Sequence[Collection[str]], blocks: Sequence[int]) -> bool:
    """Whether two runs of one seed block apply the same configuration (at one seed, in
    fixed-step mode, the second would repeat the first, not replicate it)."""
    seen = [(block, frozenset(config)) for block, config in zip(blocks, configs)]
    return len(set(seen)) != len(seen)


def check_blocks(configs: Sequence[Collection[str]], blocks: Sequence[int]) -> None:
    """Seed blocks, if any, label every run of a design, and no block repeats a configuration."""
    if not blocks:
        return
    if len(blocks) != len(configs):
        raise ValueError(f"a design's blocks label each of its {len(configs)} runs, got "
                         f"{len(blocks)} labels")
    if repeats_in_a_block(configs, blocks):
        raise ValueError("a seed block of a design repeats a configuration")


@dataclass(frozen=True)
class Action:
    """What to do next: run `n_runs` of incumbent|{hypothesis}, run a design (one run of
    incumbent|c for each c in `configs`, n_runs = len(configs)), re-run the incumbent, or stop.

    `terms` carries the numbers behind the choice for the report (e.g. efe, epistemic, pragmatic,
    cost, all in nats; efe lower is better)."""

    kind: ActionKind
    hypothesis: str | None
    n_runs: int
    reason: str
    terms: dict[str, float] = field(default_factory=dict)
    configs: tuple[frozenset[str], ...] = ()  # a design's subsets of open changes, one per run
    # a design's seed blocks, a label per run: the runs of one label share a seed (empty: the
    # runs are spread over the panel, engine.panel.design_seeds)
    blocks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("run", "design", "rerun_incumbent", "stop"):
            raise ValueError(f"Action.kind must be 'run', 'design', 'rerun_incumbent' or 'stop', "
                             f"got {self.kind!r}")
        if self.kind == "run" and not self.hypothesis:
            raise ValueError(f"a 'run' action needs a hypothesis, got {self.hypothesis!r}")
        if (self.kind == "design") != bool(self.configs) or (
                self.configs and self.n_runs != len(self.configs)):
            raise ValueError(f"a 'design' action, and only it, has configs, one per run; got "
                             f"{self.kind!r} with {len(self.configs)} configs for "
                             f"{self.n_runs} runs")
        if self.kind != "stop" and self.n_runs < 1:
            raise ValueError(f"a {self.kind!r} action needs n_runs >= 1, got {self.n_runs!r}")
        check_blocks(self.configs, self.blocks)


@dataclass(frozen=True)
class Decision:
    """Verdict on a candidate; p_better and the 90% interval of mu_cand - mu_inc (metric units)
    are None for the ratchet, which decides from single results."""

    verdict: Verdict
    p_better: float | None
    interval: tuple[float, float] | None
    n_runs: int
    reason: str


@dataclass(frozen=True)
class KeepRule:
    """Keep when P(mu_cand - mu_inc < -epsilon | data) reaches the threshold of the look, after
    >= min_replicates runs (counted over every trial of the move); revert when it is <= 1 -
    threshold; otherwise undecided, and after max_replicates runs a move gets no more. epsilon in
    metric units.

    `spending` = "none" (default): `threshold` is the posterior probability needed at every look;
    with the spike-and-slab prior (beliefs.spike) it bounds the expected share of false keeps among
    keeps, whatever the stopping (policies.keep). "obrien_fleming" or "pocock": a group-sequential
    design in which `threshold` is the OVERALL confidence: over all the looks the rule may take at
    one hypothesis, the chance of keeping a null change is <= 1 - threshold (per-look thresholds
    from policies.maths.sequential_boundaries). Looks may happen at n = min_replicates,
    min_replicates + batch, ..., and max_replicates runs (batch = 1: after any number of runs, the
    safe choice when the engine's batch size varies)."""

    threshold: float = 0.95
    epsilon: float = 0.0
    max_replicates: int = 24
    min_replicates: int = 2
    batch: int = 1
    spending: str = "none"

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and 0.5 < self.threshold < 1):
            raise ValueError(f"KeepRule.threshold must be in (0.5, 1), got {self.threshold!r}")
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon)
                and self.epsilon >= 0):
            raise ValueError(f"KeepRule.epsilon must be a finite number >= 0, "
                             f"got {self.epsilon!r}")
        if not (isinstance(self.max_replicates, int) and self.max_replicates >= 1):
            raise ValueError(f"KeepRule.max_replicates must be an int >= 1, "
                             f"got {self.max_replicates!r}")
        if not (isinstance(self.min_replicates, int)
                and 1 <= self.min_replicates <= self.max_replicates):
            raise ValueError(f"KeepRule.min_replicates must be an int in 1..max_replicates "
                             f"({self.max_replicates}), got {self.min_replicates!r}")
        if not (isinstance(self.batch, int) and not isinstance(self.batch, bool)
                and self.batch >= 1):
            raise ValueError(f"KeepRule.batch must be an int >= 1, got {self.batch!r}")
        if self.spending not in KEEP_SPENDING:
            raise ValueError(f"KeepRule.spending must be one of {KEEP_SPENDING}, "
                             f"got {self.spending!r}")

    def looks(self) -> tuple[int, ...]:
        """The run counts at which the rule may decide: min_replicates, + batch, ...,
        max_replicates."""
        return (*range(self.min_replicates, self.max_replicates, self.batch), self.max_replicates)
