"""Typed records that cross the ledger: a step's plan and a step's decision.

The ledger (memory/) stores JSON and plain columns; these frozen records are what the engine
reads and writes, with `to_json`/`from_json` at that boundary. Metric values in a `StepDecision`
are in the metric's own units (the engine's lower-is-better sign already undone).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.proposer import Hypothesis
from policies.types import check_blocks
from train.vocabulary import Role, Verdict

PlanKind = Literal["base", "run", "design", "rerun_incumbent", "stop"]
PLAN_KINDS: tuple[str, ...] = ("base", "run", "design", "rerun_incumbent", "stop")


@dataclass(frozen=True)
class PlannedSlot:
    """One run of a step as planned: its role, the hypotheses it applies, and its seed."""

    role: Role
    hypotheses: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class StepPlan:
    """What a step does, written before its runs start.

    kind: "base" (runs of the base config), "run" (n_runs of incumbent + move, and
    incumbent_runs of the incumbent on the same seeds), "design" (one run of incumbent + c for
    each subset c in `configs`, a screening block), "rerun_incumbent", or "stop" (no runs: it
    only records the proposals made before the policy stopped). `terms` are the numbers behind
    the policy's choice (nats); `proposed` the hypotheses the proposer added first.

    `runs` fixes each run's role, hypotheses and seed when the step is planned, so that a step
    planned while others are in flight runs exactly that, whatever is decided meanwhile; `after`
    is how many steps were concluded when it was planned, the order a replay folds it in. Both
    are empty in a plan written before they existed (its runs are then derived from the state,
    and it followed every earlier step's conclusion)."""

    kind: PlanKind
    hypothesis: str | None
    n_runs: int
    reason: str
    terms: Mapping[str, float] = field(default_factory=dict)
    proposed: tuple[Hypothesis, ...] = ()
    incumbent_runs: int = 0
    configs: tuple[tuple[str, ...], ...] = ()  # a design's subsets (sorted names), one per run
    blocks: tuple[int, ...] = ()  # a design's seed blocks, a label per run (policies.Action)
    runs: tuple[PlannedSlot, ...] = ()
    after: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in PLAN_KINDS:
            raise ValueError(f"StepPlan.kind must be one of {PLAN_KINDS}, got {self.kind!r}")
        if (self.kind == "run") != (self.hypothesis is not None):
            raise ValueError(f"a {self.kind!r} plan {'needs' if self.kind == 'run' else 'has no'} "
                             f"hypothesis, got {self.hypothesis!r}")
        if self.incumbent_runs and self.kind != "run":
            raise ValueError(f"only a 'run' plan pairs incumbent runs, got {self.kind!r}")
        if (self.kind == "design") != bool(self.configs) or (
                self.configs and len(self.configs) != self.n_runs):
            raise ValueError(f"a 'design' plan, and only it, has one config per run; got "
                             f"{self.kind!r} with {len(self.configs)} for {self.n_runs} runs")
        check_blocks(self.configs, self.blocks)

    def describe(self) -> str:
        """A few words for the progress line."""
        if self.kind == "run":
            return f"try {self.hypothesis}"
        if self.kind == "design":
            changes = {name for config in self.configs for name in config}
            return f"screen {len(changes)} changes in {self.n_runs} configs"
        return {"base": "baseline", "rerun_incumbent": "re-run incumbent"}.get(self.kind, self.kind)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": self.kind, "hypothesis": self.hypothesis, "n_runs": self.n_runs,
            "reason": self.reason, "terms": {k: float(v) for k, v in self.terms.items()},
            "proposed": [h.to_dict() for h in self.proposed],
        }
        if self.kind == "run":
            record["incumbent_runs"] = self.incumbent_runs
        if self.kind == "design":
            record["configs"] = [list(config) for config in self.configs]
        if self.blocks:
            record["blocks"] = list(self.blocks)
        if self.runs:
            record["runs"] = [{"role": r.role, "hypotheses": list(r.hypotheses), "seed": r.seed}
                              for r in self.runs]
        if self.after is not None:
            record["after"] = self.after
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> StepPlan:
        return cls(kind=record["kind"], hypothesis=record.get("hypothesis"),
                   n_runs=int(record["n_runs"]), reason=record.get("reason", ""),
                   terms=dict(record.get("terms", {})),
                   proposed=tuple(Hypothesis(**item) for item in record.get("proposed", [])),
                   incumbent_runs=int(record.get("incumbent_runs", 0)),
                   configs=tuple(tuple(config) for config in record.get("configs", [])),
                   blocks=tuple(int(b) for b in record.get("blocks", [])),
                   runs=tuple(PlannedSlot(r["role"], tuple(r["hypotheses"]), int(r["seed"]))
                              for r in record.get("runs", [])),
                   after=record.get("after"))


@dataclass(frozen=True)
class StepDecision:
    """The verdict on a step's move, in the metric's units: P(better), the 90% interval of
    mu(candidate) - mu(incumbent) (lo <= hi; None for the ratchet and for a trial whose every
    run crashed), the runs of the trial and why."""

    step: int
    hypothesis: str
    verdict: Verdict
    p_better: float | None
    lo: float | None
    hi: float | None
    n_runs: int
    reason: str

    @property
    def judged(self) -> bool:
        """Whether the posterior judged the move (False when every run crashed)."""
        return self.p_better is not None

    def to_json(self) -> dict[str, Any]:
        """The ledger's decision columns, step and hypothesis excluded (they are the row's key)."""
        return {"verdict": self.verdict, "p_better": self.p_better, "lo": self.lo, "hi": self.hi,
                "n_runs": self.n_runs, "reason": self.reason}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> StepDecision:
        return cls(step=int(record["step"]), hypothesis=record["hypothesis"],
                   verdict=record["verdict"],
                   p_better=record["p_better"], lo=record["lo"], hi=record["hi"],
                   n_runs=int(record["n_runs"]), reason=record["reason"])


@dataclass(frozen=True)
class StudyRun:
    """One run as the ledger holds it, for a reader of the study (engine.study.Study.records):
    where it sits (step, slot), what it ran (role, hypotheses applied, config, seed) and what it
    gave, in the metric's own units (None unless status is "ok"). Times are ISO-8601 UTC text, as
the ledger stores them."""

    step: int
    slot: int
    role: str
    hypotheses: tuple[str, ...]
    config: Mapping[str, Any]
    seed: int
    status: str
    metric: float | None
    seconds: float | None
    started: str | None
    finished: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StudyRun:
        """From a ledger run row (memory.Ledger.runs)."""
        return cls(step=int(row["step"]), slot=int(row["slot"]), role=row["role"],
                   hypotheses=tuple(row["hypotheses"]), config=dict(row["config"]),
                   seed=int(row["seed"]), status=row["status"], metric=row["metric"],
                   seconds=row["seconds"], started=row["started"], finished=row["finished"])
