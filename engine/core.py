"""The study as a state machine: `advance(state, rules, event) -> (state, commands)`.

Events say what happened: a run finished, the proposer answered. Commands say what to do next:
ask the proposer, record a plan, start these runs, record a conclusion, stop. `start` gives the
first commands for a state fresh from the ledger, so a new study and a resumed one take the same
path. Nothing here does I/O or reads a clock: the loop (engine.loop) executes the commands,
writes the ledger and turns what happens into events, with the session's clock on each run.

Several steps may be in flight (`StudyRules.workers` > 1). They conclude in step order, and
steps are planned only in the round after a conclusion, while fewer than `runs_ahead` runs are
planned and unconcluded: so every plan and decision is a function of the runs' outcomes alone,
never of which run finished first, on any runner, however its runs are timed or resumed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np

from beliefs import Beliefs, Observation
from beliefs.model import INTERACTIONS
from engine.proposer import Hypothesis
from engine.records import StepDecision, StepPlan
from engine.rules import (
    design_room,
    fit_to_budget,
    paired_runs,
    planned_runs,
    stop_reason,
    view,
    waiting,
    with_slots,
)
from engine.runner import PlannedRun
from engine.state import (
    StudyRules,
    StudyState,
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
    clock: float = 0.0  # seconds since this session began, when the run was recorded


@dataclass(frozen=True)
class Proposed:
    step: int
    hypotheses: tuple[Hypothesis, ...]  # accepted by the proposer's checks; may be empty


Event = Union[RunFinished, Proposed]


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
    """Start these runs of the step; each reports a RunFinished when it is recorded."""

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
    no runs (a stop after proposals, nothing in flight) `records_plan` in the same transaction.
    `later_runs` are the runs of later steps recorded already: the episode's experiment time
    leaves them out, so that it does not depend on when they finished."""

    step: int
    plan: StepPlan
    decision: StepDecision | None
    appraisal: dict[str, Any]
    incumbent: IncumbentSummary
    episode: dict[str, Any] | None
    runs: tuple[RunRecord, ...]
    records_plan: bool = False
    later_runs: int = 0


@dataclass(frozen=True)
class Stop:
    reason: str


Command = Union[Propose, RecordPlan, Run, Conclude, Stop]


# ------------------------------------------------------------------------------ the machine
def start(state: StudyState, rules: StudyRules) -> tuple[StudyState, list[Command]]:
    """The first commands for a state replayed from the ledger: make the missing runs of the
    steps in flight, then go on where the study was (a planning round that a kill cut short is
    finished first, as it would have been; one that ended in a recorded wait is over),
    concluding what has all its runs (or stop)."""
    commands: list[Command] = []
    state = replace(state, clock=0.0) if state.clock else state  # this session's clock
    for step in state.unconcluded:
        done = {r.slot for r in state.runs if r.step == step}
        missing = tuple(r for r in planned_runs(state, rules, step) if r.slot not in done)
        if missing:
            commands.append(Run(step, state.plans[step], missing))
    state, more = (settle if waiting(state) else go_on)(state, rules, 0.0)
    return state, commands + more


def advance(state: StudyState, rules: StudyRules, event: Event) -> tuple[StudyState, list[Command]]:
    if isinstance(event, RunFinished):
        return settle(with_run(state, event.run, event.seconds), rules, event.clock)
    if isinstance(event, Proposed):
        return choose(with_proposals(state, event.hypotheses), rules, event.step, event.hypotheses)
    raise TypeError(f"not a study event: {event!r}")


def settle(state: StudyState, rules: StudyRules,
           clock: float) -> tuple[StudyState, list[Command]]:
    """Conclude the oldest step in flight once its runs are all in, and start the planning
    round that follows; conclude the next only once that round is over (`go_on`), however many
    steps had all their runs in at once. So each round of plans follows one conclusion, and a
    run that concludes nothing plans nothing: when runs finish never decides what is planned."""
    commands: list[Command] = []
    while True:
        flying = state.unconcluded
        if not flying or len(state.runs_of(flying[0])) < len(planned_runs(state, rules,
                                                                          flying[0])):
            return state, commands
        state, conclusion = conclude(state, rules, flying[0], clock)
        state, more = next_commands(state, rules)
        commands += [conclusion, *more]
        if more:  # the round goes on through the proposer, and its plans go_on
            return state, commands


def go_on(state: StudyState, rules: StudyRules,
          clock: float) -> tuple[StudyState, list[Command]]:
    """Plan on while there is room; once the round is over, settle what is complete."""
    state, more = next_commands(state, rules)
    return (state, more) if more else settle(state, rules, clock)


def room_ahead(state: StudyState, rules: StudyRules) -> bool:
    """Whether another step may be planned while others are in flight: fewer than runs_ahead
    runs planned and unconcluded, and none of them a baseline or incumbent re-run, which every
    later choice must see."""
    flying = state.unconcluded
    if not flying:
        return True
    if any(state.plans[s].kind in ("base", "rerun_incumbent") for s in flying):
        return False
    planned = sum(len(planned_runs(state, rules, s)) for s in flying)
    return planned < rules.runs_ahead


def next_commands(state: StudyState, rules: StudyRules) -> tuple[StudyState, list[Command]]:
    """The baseline first; then, while there is room ahead, a proposal round unless a budget is
    spent or nothing is open. A study stops only with nothing in flight."""
    if state.next_step == 0:
        plan = StepPlan("base", None, rules.study.base_runs, "baseline runs of the base config")
        return plan_step(state, rules, 0, plan)
    if not room_ahead(state, rules):
        return state, []
    reason = stop_reason(state, rules)
    if reason:
        return state, [] if state.unconcluded else [Stop(reason)]
    return state, [Propose(state.next_step)]


def plan_step(state: StudyState, rules: StudyRules, step: int,
              plan: StepPlan) -> tuple[StudyState, list[Command]]:
    """Record the plan with its runs fixed, start them, and plan on while there is room."""
    after = len(state.concluded)
    state = with_slots(with_plan(state, step, replace(plan, after=after)), rules, step)
    plan = state.plans[step]
    commands: list[Command] = [RecordPlan(step, plan)]
    if plan.runs:
        commands.append(Run(step, plan, tuple(planned_runs(state, rules, step))))
    state, more = go_on(state, rules, state.clock)
    return state, commands + more


def choose(state: StudyState, rules: StudyRules, step: int,
           proposed: tuple[Hypothesis, ...]) -> tuple[StudyState, list[Command]]:
    """The policy's next action as a plan, fitted to the budget and paired with incumbent runs.
    A stop after new proposals is still recorded, so the report and a resume know them."""
    rng = np.random.default_rng([rules.study.seed, step])
    action = rules.policy.select(view(state, rules), state.beliefs, rng)
    if action.kind == "stop":
        plan = StepPlan("stop", None, 0, action.reason, proposed=proposed,
                        after=len(state.concluded))
        if state.unconcluded:  # nothing to add while steps are in flight: wait for the next
            # conclusion; new proposals are recorded in a step of no runs, concluded in its turn
            recorded = [RecordPlan(step, plan)] if proposed else []
            state, more = settle(with_plan(state, step, plan) if proposed else state, rules,
                                 state.clock)  # the round is over
            return state, recorded + more
        if not proposed:
            return state, [Stop(action.reason)]
        state = with_step_done(with_plan(state, step, plan), step, 0.0)
        conclusion = Conclude(step, plan, None, {"terms": {}}, incumbent_summary(state, rules),
                              None, (), records_plan=True)
        return state, [conclusion, Stop(action.reason)]
    incumbent_runs, configs, blocks = 0, (), action.blocks
    if action.kind == "design":  # a screening block may be larger than a trial step
        room = design_room(state, rules)
        configs, blocks = tuple(tuple(sorted(c)) for c in action.configs[:room]), blocks[:room]
        n_runs = len(configs)
    else:
        n_runs = fit_to_budget(state, rules, action.n_runs)
    if action.kind == "run":
        left = rules.study.budget_trials - state.runs_committed - n_runs
        incumbent_runs = min(left, paired_runs(state, rules, action.hypothesis, n_runs))
    plan = StepPlan(action.kind, action.hypothesis, n_runs, action.reason,
                    {k: float(v) for k, v in action.terms.items()}, proposed, incumbent_runs,
                    configs, blocks)
    return plan_step(state, rules, step, plan)


def conclude(state: StudyState, rules: StudyRules, step: int,
             clock: float) -> tuple[StudyState, Conclude]:
    """Update the beliefs with the step's runs, appraise and decide. Its seconds are the
    session's since the last conclusion: summed, the study's wall time."""
    seconds = max(0.0, clock - state.clock)
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
    state = replace(with_step_done(state, step, seconds), clock=max(clock, state.clock))
    episode = None if decision is None else episode_of(state, rules, decision, appraisal, runs)
    later = sum(r.step > step for r in state.runs)
    return state, Conclude(step, plan, decision, appraisal, incumbent_summary(state, rules),
                           episode, tuple(runs), later_runs=later)


# ----------------------------------------------------------------------- a step's conclusion
def decide(state: StudyState, rules: StudyRules, step: int, plan: StepPlan,
           runs: Sequence[RunRecord]) -> StepDecision | None:
    """The verdict on a trial step's move (None for other steps), in the metric's units. A trial
    whose every candidate run crashed is reverted unjudged: the posterior learned nothing. A
    trial planned on an incumbent that a keep has since changed decides nothing (`superseded`):
    its runs stay data about their configurations."""
    if plan.kind != "run" or superseded(state, plan):
        return None
    move, current = plan.hypothesis, view(state, rules, concluding=step)
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


def superseded(state: StudyState, plan: StepPlan) -> bool:
    """Whether a keep has changed the incumbent since the trial was planned (it was planned
    while an earlier step was in flight): its runs tried the move on an incumbent that is no
    longer the one a verdict would be about, so they stay data and the move stays open."""
    candidate = next((frozenset(r.hypotheses) for r in plan.runs if r.role == "candidate"),
                     None)
    return candidate is not None and candidate - move_members(plan.hypothesis) != state.incumbent


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
    observations = [Observation(r.config, r.value, seed=r.seed, device=r.device) for r in runs
                    if r.value is not None]
    if not observations or before.n_observations == 0:
        return appraisal
    surprise = [-float(before.predict([o.config], seeds=[o.seed], devices=[o.device])
                       .logpdf(np.array([o.value]))[0]) for o in observations]
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
