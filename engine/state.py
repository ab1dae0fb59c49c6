"""The study's state as a frozen record, and the transitions that make a new one.

`StudyState` holds what the ledger says (plans, runs, verdicts) and the beliefs those runs imply.
It is never changed in place: each `with_*` transition returns a new state. engine.rules reads a
state with the study's fixed `StudyRules` (open moves, the view, budget, pairing, stopping, the
runs of a step) and replays a ledger through these transitions in the order the live loop
(engine.core) took them, so a resumed study is in exactly the state the live one was.

Metric values inside are lower-is-better: a higher-is-better metric is negated on the way in
(`StudyRules.sign`) and on the way out.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from beliefs import BeliefPrior, Beliefs, Observation
from beliefs import Hypothesis as BeliefHypothesis
from engine.config import StudyConfig, StudySection
from engine.proposer import Hypothesis
from engine.records import StepDecision, StepPlan
from policies import KeepRule, Policy, RunRecord
from policies.types import ClosedTrial, move_members
from train.vocabulary import FINAL_VERDICTS


@dataclass(frozen=True)
class StudyRules:
    """The fixed parts of a study that its state is read with: the [study] settings, the
    policy and keep rule, whether interactions are modelled, the metric's sign and base config,
    and how many runs the runner makes at once (`workers`: 1 for the local runner)."""

    study: StudySection
    policy: Policy
    keep_rule: KeepRule
    interactions: bool
    kappa: float
    sign: float  # +1 when lower is better, -1 when higher is (values inside are sign * metric)
    base_config: Mapping[str, Any]
    workers: int = 1
    # The env's check of code patches applied together (Env.patch_problem); None: no patches.
    patch_problem: Callable[[Sequence[str]], str | None] | None = None

    @classmethod
    def from_config(cls, cfg: StudyConfig, policy: Policy,
                    patch_problem: Callable[[Sequence[str]], str | None] | None = None
                    ) -> StudyRules:
        runner = cfg.runner
        workers = 1 if runner.kind == "local" else len(runner.devices) or runner.workers
        return cls(study=cfg.study, policy=policy, keep_rule=policy.keep_rule,
                   interactions=cfg.beliefs.interactions, kappa=cfg.policy.kappa,
                   sign=1.0 if cfg.env["direction"] == "lower" else -1.0,
                   base_config=dict(cfg.env.get("base", {})), workers=workers,
                   patch_problem=patch_problem)

    @property
    def runs_ahead(self) -> int:
        """The runs the study keeps planned and unconcluded: one per worker, and a worker's
        worth less one queued behind them, so that a worker that frees while the oldest step
        waits for its last run finds a run to start. One worker: one step at a time."""
        return 2 * self.workers - 1

    def value_of(self, metric: float | None, status: str) -> float | None:
        """A run's value on the internal lower-is-better scale; None for a failed run."""
        return None if metric is None or status != "ok" else self.sign * metric

    def metric(self, value: float | None) -> float | None:
        """Back from the internal scale to the metric's own units."""
        return None if value is None else self.sign * float(value)


@dataclass(frozen=True)
class StudyState:
    """Everything a study knows, as of its ledger. Fields are never mutated: the beliefs object
    and the mappings are replaced by the `with_*` transitions, not changed."""

    hypotheses: Mapping[str, Hypothesis]  # declaration order, then proposals in the order made
    beliefs: Beliefs  # the posterior after every concluded step's runs
    plans: Mapping[int, StepPlan] = field(default_factory=dict)
    runs: tuple[RunRecord, ...] = ()  # every recorded run by (step, slot), unconcluded ones too
    run_seconds: tuple[tuple[int, float], ...] = ()  # (step, seconds) of the runs that say
    concluded: frozenset[int] = frozenset()
    incumbent: frozenset[str] = frozenset()
    kept: tuple[str, ...] = ()  # hypotheses in the order they were kept
    closed: Mapping[str, ClosedTrial] = field(default_factory=dict)
    elapsed: float = 0.0  # seconds of the concluded steps, summed over sessions
    clock: float = 0.0  # this session's clock (seconds) at its last conclusion

    @classmethod
    def start(cls, hypotheses: Iterable[Hypothesis], prior: BeliefPrior,
              interactions: bool, seed_effects: bool = False,
              device_effects: bool = False) -> StudyState:
        known = {h.name: h for h in hypotheses}
        beliefs = Beliefs([BeliefHypothesis(h.name, h.category) for h in known.values()],
                          interactions=interactions, seed_effects=seed_effects,
                          device_effects=device_effects, prior=prior)
        return cls(hypotheses=known, beliefs=beliefs)

    @property
    def next_step(self) -> int:
        return max(self.plans, default=-1) + 1

    @property
    def unconcluded(self) -> list[int]:
        """The planned steps whose conclusion is not recorded yet, in step order: the steps in
        flight (a resume finishes them first)."""
        return [s for s in sorted(self.plans) if s not in self.concluded]

    @property
    def pending(self) -> int | None:
        """The oldest step in flight, which concludes first."""
        return next(iter(self.unconcluded), None)

    @property
    def runs_used(self) -> int:
        return len(self.runs)

    @property
    def runs_committed(self) -> int:
        """The runs made or planned: what the budget is charged when a step is planned."""
        recorded: dict[int, int] = {}
        for run in self.runs:
            recorded[run.step] = recorded.get(run.step, 0) + 1
        return sum(len(plan.runs) if plan.runs else recorded.get(step, 0)
                   for step, plan in self.plans.items())

    def runs_of(self, step: int) -> list[RunRecord]:
        """The step's runs in plan order, however they finished."""
        return sorted((r for r in self.runs if r.step == step), key=lambda r: r.slot)


# ------------------------------------------------------------------------------- transitions
def with_proposals(state: StudyState, proposed: Iterable[Hypothesis]) -> StudyState:
    """The state with the new hypotheses among `proposed` known, each with a prior effect."""
    new = [h for h in proposed if h.name not in state.hypotheses]
    if not new:
        return state
    beliefs = state.beliefs.copy()
    for h in new:
        beliefs.add_hypothesis(BeliefHypothesis(h.name, h.category))
    return dataclasses.replace(state, hypotheses={**state.hypotheses, **{h.name: h for h in new}},
                               beliefs=beliefs)


def with_plan(state: StudyState, step: int, plan: StepPlan) -> StudyState:
    if step in state.plans:
        raise ValueError(f"step {step} is planned already")
    state = with_proposals(state, plan.proposed)
    return dataclasses.replace(state, plans={**state.plans, step: plan})


def with_run(state: StudyState, run: RunRecord, seconds: float | None) -> StudyState:
    if run.step not in state.plans or run.step in state.concluded:
        raise ValueError(f"a run of step {run.step}, which is not in flight")
    if any(r.step == run.step and r.slot == run.slot for r in state.runs):
        raise ValueError(f"step {run.step} slot {run.slot} is recorded already")
    # sorted, so that the order runs finish in leaves no trace in the state
    times = (state.run_seconds if seconds is None
             else tuple(sorted((*state.run_seconds, (run.step, seconds)))))
    # in (step, slot) order however they finish, as a replay of the ledger lists them
    runs = tuple(sorted((*state.runs, run), key=lambda r: (r.step, r.slot)))
    return dataclasses.replace(state, runs=runs, run_seconds=times)


def with_step_observed(state: StudyState, step: int) -> StudyState:
    """The state whose beliefs have taken in the step's successful runs."""
    observations = [Observation(r.config, r.value, seed=r.seed, device=r.device)
                    for r in state.runs_of(step) if r.value is not None]
    if not observations:
        return state
    beliefs = state.beliefs.copy()
    beliefs.update(observations)
    return dataclasses.replace(state, beliefs=beliefs)


def with_decision(state: StudyState, decision: StepDecision) -> StudyState:
    """A keep or revert closes the move's trial; a keep adds its hypotheses to the incumbent."""
    if decision.verdict not in FINAL_VERDICTS:
        return state
    trial = ClosedTrial(decision.verdict, decision.step, state.incumbent, decision.judged)
    closed = {**state.closed, decision.hypothesis: trial}
    if decision.verdict == "revert":
        return dataclasses.replace(state, closed=closed)
    members = move_members(decision.hypothesis)
    return dataclasses.replace(state, closed=closed, incumbent=state.incumbent | members,
                               kept=(*state.kept, *sorted(members - state.incumbent)))


def with_step_done(state: StudyState, step: int, seconds: float) -> StudyState:
    return dataclasses.replace(state, concluded=state.concluded | {step},
                               elapsed=state.elapsed + seconds)
