"""The study as a state machine: `advance(state, rules, event) -> (state, commands)`.

Events say what happened: a run finished, a step's runs are all in, the proposer answered.
Commands say what to do next: ask the proposer, record a plan, make these runs, record a
conclusion, stop. `start` gives the first commands for a state fresh from the ledger, so a new
study and a resumed one take the same path. Nothing here does I/O or reads a clock: the loop
(engine.loop) executes the commands, writes the ledger and turns what happens into events.

Runs of a step may finish in any order: a step is concluded from its runs in plan order.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from beliefs import Beliefs, Observation
from beliefs.model import INTERACTIONS
from engine.proposer import Hypothesis
from engine.records import StepDecision, StepPlan
from engine.runner import PlannedRun
from engine.state import (
    StudyRules,
    StudyState,
    design_room,
    fit_to_budget,
    paired_runs,
    planned_runs,
    stop_reason,
    view,
    with_decision,
    with_plan,
    with_proposals,
    with_run,
    with_step_done,
    with_step_observed,
)
from policies import RunRecord, compression_progress, realised_learntropy
from policies.types import move_members

INTERVAL_LEVEL = 0.9


# ------------------------------------------------------------------------------------ events
@dataclass(frozen=True)
class RunFinished:
    run: RunRecord
    seconds: float | None  # wall time of the run, when the env measured it


@dataclass(frozen=True)
class StepFinished:
    step: int
    seconds: float  # wall time of this session's part of the step


@dataclass(frozen=True)
class Proposed:
    step: int
    hypotheses: tuple[Hypothesis, ...]  # accepted by the proposer's checks; may be empty


Event = Union[RunFinished, StepFinished, Proposed]


# ---------------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Propose:
    step: int


@dataclass(frozen=True)
class RecordPlan:
    step: int
    plan: StepPlan


@dataclass(frozen=True)
class Run:
    """Make these runs of the step, then report a StepFinished."""

    step: int
    plan: StepPlan
    runs: tuple[PlannedRun, ...]


@dataclass(frozen=True)
class IncumbentSummary:
    """The incumbent after a step, in the metric's units: what was kept, and its posterior
    mean with a central 90% interval (lo <= hi)."""

    kept: tuple[str, ...]
    mean: float
    interval: tuple[float, float]

    def to_json(self) -> dict[str, Any]:
        return {"kept": list(self.kept), "mean": self.mean, "interval": list(self.interval)}


@dataclass(frozen=True)
class Conclude:
    """Record the step's appraisal (nats), decision and incumbent together; `episode` is the
    memory's record of the decision, `runs` the step's runs (for the progress line). A step with
    no runs (a stop after proposals) `records_plan` in the same transaction."""

    step: int
    plan: StepPlan
    decision: StepDecision | None
    appraisal: dict[str, Any]
    incumbent: IncumbentSummary
    episode: dict[str, Any] | None
    runs: tuple[RunRecord, ...]
    records_plan: bool = False


@dataclass(frozen=True)
class Stop:
    reason: str


Command = Union[Propose, RecordPlan, Run, Conclude, Stop]


# ------------------------------------------------------------------------------ the machine
def start(state: StudyState, rules: StudyRules) -> tuple[StudyState, list[Command]]:
    """The first commands for a state replayed from the ledger: finish the unconcluded step's
    missing runs, or else plan the baseline, or else go on (or stop)."""
    if state.pending is not None:
        step = state.pending
        done = {r.slot for r in state.runs if r.step == step}
        missing = tuple(r for r in planned_runs(state, rules, step) if r.slot not in done)
        return state, [Run(step, state.plans[step], missing)]
    return next_commands(state, rules)


def advance(state: StudyState, rules: StudyRules, event: Event) -> tuple[StudyState, list[Command]]:
    if isinstance(event, RunFinished):
        return with_run(state, event.run, event.seconds), []
    if isinstance(event, StepFinished):
        return conclude(state, rules, event.step, event.seconds)
    if isinstance(event, Proposed):
        return choose(with_proposals(state, event.hypotheses), rules, event.step, event.hypotheses)
    raise TypeError(f"not a study event: {event!r}")


def next_commands(state: StudyState, rules: StudyRules) -> tuple[StudyState, list[Command]]:
    """After a concluded step: the baseline first, then a proposal round unless a budget is
    spent or nothing is open."""
    if state.next_step == 0:
        plan = StepPlan("base", None, rules.study.base_runs, "baseline runs of the base config")
        return plan_step(state, rules, 0, plan)
    reason = stop_reason(state, rules)
    return state, [Stop(reason)] if reason else [Propose(state.next_step)]


def plan_step(state: StudyState, rules: StudyRules, step: int,
              plan: StepPlan) -> tuple[StudyState, list[Command]]:
    state = with_plan(state, step, plan)
    return state, [RecordPlan(step, plan), Run(step, plan, tuple(planned_runs(state, rules, step)))]


def choose(state: StudyState, rules: StudyRules, step: int,
           proposed: tuple[Hypothesis, ...]) -> tuple[StudyState, list[Command]]:
    """The policy's next action as a plan, fitted to the budget and paired with incumbent runs.
    A stop after new proposals is still recorded, so the report and a resume know them."""
    rng = np.random.default_rng([rules.study.seed, step])
    action = rules.policy.select(view(state, rules), state.beliefs, rng)
    if action.kind == "stop":
        if not proposed:
            return state, [Stop(action.reason)]
        plan = StepPlan("stop", None, 0, action.reason, proposed=proposed)
        state = with_step_done(with_plan(state, step, plan), step, 0.0)
        conclusion = Conclude(step, plan, None, {"terms": {}}, incumbent_summary(state, rules),
                              None, (), records_plan=True)
        return state, [conclusion, Stop(action.reason)]
    incumbent_runs, configs = 0, ()
    if action.kind == "design":  # a screening block may be larger than a trial step
        configs = tuple(tuple(sorted(c)) for c in action.configs[:design_room(state, rules)])
        n_runs = len(configs)
    else:
        n_runs = fit_to_budget(state, rules, action.n_runs)
    if action.kind == "run":
        left = rules.study.budget_trials - state.runs_used - n_runs
        incumbent_runs = min(left, paired_runs(state, rules, action.hypothesis, n_runs))
    plan = StepPlan(action.kind, action.hypothesis, n_runs, action.reason,
                    {k: float(v) for k, v in action.terms.items()}, proposed, incumbent_runs,
                    configs)
    return plan_step(state, rules, step, plan)


def conclude(state: StudyState, rules: StudyRules, step: int,
             seconds: float) -> tuple[StudyState, list[Command]]:
    """Update the beliefs with the step's runs, appraise, decide, then say what comes next."""
    planned = {r.slot for r in planned_runs(state, rules, step)}
    runs = state.runs_of(step)
    if {r.slot for r in runs} != planned:
        raise ValueError(f"step {step} has runs {sorted(r.slot for r in runs)} "
                         f"of {sorted(planned)}")
    plan, before = state.plans[step], state.beliefs
    state = with_step_observed(state, step)
    appraisal = appraise(before, state.beliefs, runs, plan, kappa=rules.kappa,
                         appraises_effect=plan.hypothesis in state.hypotheses)
    appraisal["seconds"] = seconds
    decision = decide(state, rules, step, plan, runs)
    if decision is not None:
        state = with_decision(state, decision)
    state = with_step_done(state, step, seconds)
    episode = None if decision is None else episode_of(state, rules, decision, appraisal, runs)
    conclusion = Conclude(step, plan, decision, appraisal, incumbent_summary(state, rules),
                          episode, tuple(runs))
    state, commands = next_commands(state, rules)
    return state, [conclusion, *commands]


# ----------------------------------------------------------------------- a step's conclusion
def decide(state: StudyState, rules: StudyRules, step: int, plan: StepPlan,
           runs: Sequence[RunRecord]) -> StepDecision | None:
    """The verdict on a trial step's move (None for other steps), in the metric's units. A trial
    whose every candidate run crashed is reverted unjudged: the posterior learned nothing."""
    if plan.kind != "run":
        return None
    move, current = plan.hypothesis, view(state, rules)
    candidate_runs = [r for r in runs if r.role == "candidate"]
    if candidate_runs and all(r.value is None for r in candidate_runs):
        return StepDecision(step, move, "revert", None, None, None,
                            current.runs_per_hypothesis[move],
                            f"every run crashed ({candidate_runs[0].status})")
    d = rules.policy.decide(current, state.beliefs, move, rules.keep_rule)
    lo, hi = d.interval if d.interval is not None else (None, None)
    lo, hi = rules.metric(lo), rules.metric(hi)
    if lo is not None and lo > hi:
        lo, hi = hi, lo
    return StepDecision(step, move, d.verdict, d.p_better, lo, hi, d.n_runs, d.reason)


def incumbent_summary(state: StudyState, rules: StudyRules) -> IncumbentSummary:
    posterior = state.beliefs.posterior_mean([state.incumbent])
    lo, hi = posterior.interval(INTERVAL_LEVEL)
    ends = sorted([rules.metric(lo[0]), rules.metric(hi[0])])
    return IncumbentSummary(state.kept, rules.metric(posterior.mean[0]), (ends[0], ends[1]))


def appraise(before: Beliefs, after: Beliefs, runs: Sequence[RunRecord], plan: StepPlan, *,
             kappa: float, appraises_effect: bool) -> dict[str, Any]:
    """Surprise, learntropy and compression progress of a step's outcomes (nats); None where a
    leave-one-out predictive of one or two observations is degenerate. Learntropy is about one
    hypothesis's effect, so a pair move or a baseline step has none."""
    appraisal: dict[str, Any] = {"terms": dict(plan.terms)}
    observations = [Observation(r.config, r.value, seed=r.seed) for r in runs
                    if r.value is not None]
    if not observations or before.n_observations == 0:
        return appraisal
    surprise = [-float(before.predict([o.config], seeds=[o.seed]).logpdf(np.array([o.value]))[0])
                for o in observations]
    values = {"surprise": float(np.mean(surprise)),
              "compression_progress": compression_progress(before, after, before.observations)}
    if appraises_effect:
        values["learntropy"] = realised_learntropy(before, after, plan.hypothesis, kappa=kappa)
    for name, value in values.items():
        appraisal[name] = float(value) if np.isfinite(value) else None
    return appraisal


def category_of(state: StudyState, move: str) -> str:
    """A hypothesis's category; a pair move's is "interaction" when its members' differ."""
    categories = {state.hypotheses[name].category for name in move_members(move)}
    return categories.pop() if len(categories) == 1 else INTERACTIONS


def episode_of(state: StudyState, rules: StudyRules, decision: StepDecision,
               appraisal: dict[str, Any], runs: Sequence[RunRecord]) -> dict[str, Any]:
    """The episodic memory's record of a decision (the env fingerprint is added by the loop)."""
    values = [rules.metric(r.value) for r in runs if r.role == "candidate" and r.value is not None]
    outcome = {"verdict": decision.verdict, "p_better": decision.p_better,
               "interval": [decision.lo, decision.hi], "n_runs": decision.n_runs,
               "mean_metric": float(np.mean(values)) if values else None}
    return dict(hypothesis=decision.hypothesis, category=category_of(state, decision.hypothesis),
                outcome=outcome, surprise=appraisal.get("surprise"),
                learntropy=appraisal.get("learntropy"),
                compression_progress=appraisal.get("compression_progress"))
