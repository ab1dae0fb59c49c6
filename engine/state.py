"""The study's state as a frozen record, rebuilt from the ledger, and the rules that read it.

`StudyState` holds what the ledger says (plans, runs, verdicts) and the beliefs those runs imply.
It is never changed in place: each `with_*` transition returns a new state, and `replay` folds
the ledger's records through the same transitions that the live loop (engine.core) takes, so a
resumed study is in exactly the state the live one was. The rule functions below (open moves,
the view, budget, pairing, stopping, the runs of a step) are pure functions of a state and the
study's fixed `StudyRules`.

Metric values inside are lower-is-better: a higher-is-better metric is negated on the way in
(`StudyRules.sign`) and on the way out.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from beliefs import BeliefPrior, Beliefs, Observation
from beliefs import Hypothesis as BeliefHypothesis
from engine.config import StudyConfig, StudySection
from engine.panel import candidate_seeds, design_seeds, incumbent_seeds, ratchet_seeds
from engine.proposer import Hypothesis
from engine.records import StepDecision, StepPlan
from engine.runner import PlannedRun
from memory import Ledger
from policies import KeepRule, Policy, RunRecord, StudyView
from policies.types import ClosedTrial, MoveMenu, move_members
from train.vocabulary import FINAL_VERDICTS


@dataclass(frozen=True)
class StudyRules:
    """The fixed parts of a study that its state is read with: the [study] settings, the
    policy and keep rule, whether interactions are modelled, the metric's sign and base config."""

    study: StudySection
    policy: Policy
    keep_rule: KeepRule
    interactions: bool
    kappa: float
    sign: float  # +1 when lower is better, -1 when higher is (values inside are sign * metric)
    base_config: Mapping[str, Any]

    @classmethod
    def from_config(cls, cfg: StudyConfig, policy: Policy) -> StudyRules:
        return cls(study=cfg.study, policy=policy, keep_rule=policy.keep_rule,
                   interactions=cfg.beliefs.interactions, kappa=cfg.policy.kappa,
                   sign=1.0 if cfg.env["direction"] == "lower" else -1.0,
                   base_config=dict(cfg.env.get("base", {})))

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
    run_seconds: tuple[float, ...] = ()
    concluded: frozenset[int] = frozenset()
    incumbent: frozenset[str] = frozenset()
    kept: tuple[str, ...] = ()  # hypotheses in the order they were kept
    closed: Mapping[str, ClosedTrial] = field(default_factory=dict)
    elapsed: float = 0.0  # seconds of the concluded steps, summed over sessions

    @classmethod
    def start(cls, hypotheses: Iterable[Hypothesis], prior: BeliefPrior,
              interactions: bool, seed_effects: bool = False) -> StudyState:
        known = {h.name: h for h in hypotheses}
        beliefs = Beliefs([BeliefHypothesis(h.name, h.category) for h in known.values()],
                          interactions=interactions, seed_effects=seed_effects, prior=prior)
        return cls(hypotheses=known, beliefs=beliefs)

    @property
    def next_step(self) -> int:
        return max(self.plans, default=-1) + 1

    @property
    def pending(self) -> int | None:
        """The planned step whose conclusion is not recorded yet (a resume finishes it first)."""
        return next((s for s in sorted(self.plans) if s not in self.concluded), None)

    @property
    def runs_used(self) -> int:
        return len(self.runs)

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
    times = state.run_seconds if seconds is None else (*state.run_seconds, seconds)
    # in (step, slot) order however they finish, as a replay of the ledger lists them
    runs = tuple(sorted((*state.runs, run), key=lambda r: (r.step, r.slot)))
    return dataclasses.replace(state, runs=runs, run_seconds=times)


def with_step_observed(state: StudyState, step: int) -> StudyState:
    """The state whose beliefs have taken in the step's successful runs."""
    observations = [Observation(r.config, r.value, seed=r.seed) for r in state.runs_of(step)
                    if r.value is not None]
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


def replay(ledger: Ledger, study_id: int, start: StudyState, rules: StudyRules) -> StudyState:
    """The state the ledger's records lead to from `start`: each step's plan, its runs, and
    (for a concluded step) its observations, its decision and its seconds, in step order."""
    runs_by_step: dict[int, list[dict]] = {}
    for row in ledger.runs(study_id):
        runs_by_step.setdefault(row["step"], []).append(row)
    decisions = {row["step"]: StepDecision.from_json(row) for row in ledger.decisions(study_id)}
    seconds = {row["step"]: row["appraisal"].get("seconds", 0.0) for row in ledger.steps(study_id)}
    state = start
    for step, record in sorted(ledger.plans(study_id).items()):
        state = with_plan(state, step, StepPlan.from_json(record))
        for row in runs_by_step.get(step, []):
            state = with_run(state, run_record(row, step, rules), row["seconds"])
        if step in seconds:
            state = with_step_observed(state, step)
            if step in decisions:
                state = with_decision(state, decisions[step])
            state = with_step_done(state, step, seconds[step])
    return state


def run_record(row: Mapping[str, Any], step: int, rules: StudyRules) -> RunRecord:
    """A ledger run row as the policies see it."""
    return RunRecord(config=frozenset(row["hypotheses"]),
                     value=rules.value_of(row["metric"], row["status"]), status=row["status"],
                     seed=row["seed"], step=step, role=row["role"], slot=row["slot"])


# ------------------------------------------------------------------------------------ rules
def open_moves(state: StudyState, rules: StudyRules) -> tuple[list[str], frozenset[str]]:
    """(the moves open to a trial, the reverted ones reopened among them): the policy's rule,
    less the moves that would apply two hypotheses setting the same key. Those are
    alternatives, not parts of one configuration: merged, the later would silently win, and
    the ledger would name a hypothesis that did not run."""
    menu = MoveMenu(tuple(state.hypotheses), state.incumbent, state.closed, rules.interactions,
                    candidate_runs(state))
    moves, reopened = rules.policy.open_moves(menu, state.beliefs)
    conflicts = conflicting_pairs(state)
    composable = [move for move in moves
                  if not any(frozenset(pair) in conflicts
                             for pair in combinations(state.incumbent | move_members(move), 2))]
    return composable, reopened & frozenset(composable)


def conflicting_pairs(state: StudyState) -> frozenset[frozenset[str]]:
    """Every pair of known hypotheses that set a common config key (alternatives)."""
    setters: dict[str, list[str]] = {}
    for name, hypothesis in state.hypotheses.items():
        for key in hypothesis.change:
            setters.setdefault(key, []).append(name)
    return frozenset(frozenset((a, b)) for names in setters.values()
                     for i, a in enumerate(names) for b in names[i + 1:])


def candidate_runs(state: StudyState) -> dict[str, int]:
    """Each tried move's candidate runs over all its trials (crashed ones too): the count its
    keep rule's looks and cap read, since a reopened trial goes on from the earlier runs."""
    runs: dict[str, int] = {}
    for record in state.runs:
        move = state.plans[record.step].hypothesis
        if record.role == "candidate" and move:
            runs[move] = runs.get(move, 0) + 1
    return runs


def view(state: StudyState, rules: StudyRules) -> StudyView:
    """What the policy sees: the open moves, each move's runs over all its trials, and the runs
    a step of each open move would make."""
    candidates, _ = open_moves(state, rules)
    runs_per = {move: 0 for move in candidates} | candidate_runs(state)
    undecided = [p.hypothesis for step, p in sorted(state.plans.items())
                 if p.hypothesis in candidates and (p.hypothesis not in state.closed
                                                    or step > state.closed[p.hypothesis].step)]
    mean_seconds = float(np.mean(state.run_seconds)) if state.run_seconds else 0.0
    n = fit_to_budget(state, rules, rules.study.replicates_per_step)
    left = rules.study.budget_trials - state.runs_used - n
    step_runs = {move: (n, max(0, min(left, paired_runs(state, rules, move, n))))
                 for move in candidates}
    return StudyView(incumbent=state.incumbent, candidates=candidates, history=list(state.runs),
                     runs_per_hypothesis=runs_per,
                     runs_left=rules.study.budget_trials - state.runs_used, seconds_left=None,
                     expected_seconds={c: mean_seconds for c in candidates},
                     open_hypothesis=undecided[-1] if undecided else None, step_runs=step_runs,
                     conflicts=conflicting_pairs(state))


def incumbent_runs_per_step(rules: StudyRules) -> int:
    return rules.policy.incumbent_runs(rules.study.incumbent_runs_per_step)


def reserved_incumbent_runs(rules: StudyRules) -> int:
    """Runs kept back for pairing: every step's, unless pairing is adaptive (then a step near
    the end of the budget may go unpaired)."""
    return 0 if rules.study.adaptive_incumbent_runs else incumbent_runs_per_step(rules)


def fit_to_budget(state: StudyState, rules: StudyRules, n_runs: int) -> int:
    """The runs a step may make: at most replicates_per_step and the runs left (>= 1)."""
    left = rules.study.budget_trials - state.runs_used - reserved_incumbent_runs(rules)
    return max(1, min(n_runs, rules.study.replicates_per_step, left))


def design_room(state: StudyState, rules: StudyRules) -> int:
    """The runs a design step may make: the runs left, less those kept back for pairing (>= 1)."""
    return max(1, rules.study.budget_trials - state.runs_used - reserved_incumbent_runs(rules))


def paired_runs(state: StudyState, rules: StudyRules, move: str, n_candidate: int) -> int:
    """Incumbent runs to pair with n_candidate runs of the move: one at each seed of the
    candidate's runs that the incumbent has no run at, at most incumbent_runs_per_step, or with
    adaptive_incumbent_runs only when m incumbent runs narrow the posterior of
    mu(candidate) - mu(incumbent) at least as much as m extra candidate runs would. An
    incumbent measured over several trials is known well; more runs of it buy little."""
    candidate = state.incumbent | move_members(move)
    step, runs, study = state.next_step, state.runs, rules.study
    seeds = candidate_seeds(study, runs, state.incumbent, candidate, step, n_candidate)
    missing = incumbent_seeds(runs, state.incumbent, step, seeds)
    m = min(incumbent_runs_per_step(rules), len(missing))
    if m == 0 or not rules.study.adaptive_incumbent_runs:
        return m
    more = candidate_seeds(study, runs, state.incumbent, candidate, step, n_candidate + m)
    paired = state.beliefs.difference_variance_after(candidate, state.incumbent, (n_candidate, m),
                                                     seeds=(seeds, missing[:m]))
    alone = state.beliefs.difference_variance_after(candidate, state.incumbent,
                                                    (n_candidate + m, 0), seeds=(more, []))
    return m if paired <= alone else 0


def stop_reason(state: StudyState, rules: StudyRules) -> str:
    """Why the study must stop before planning another step; "" while it may go on."""
    study = rules.study
    if study.budget_trials - state.runs_used < 1 + reserved_incumbent_runs(rules):
        return f"budget_trials spent ({state.runs_used} of {study.budget_trials} runs)"
    if study.budget_seconds and state.elapsed >= study.budget_seconds:
        return f"budget_seconds spent ({state.elapsed:.0f} s of {study.budget_seconds:g} s)"
    if not open_moves(state, rules)[0]:
        return "every hypothesis is decided"
    return ""


def config_for(state: StudyState, rules: StudyRules, applied: frozenset[str]) -> dict:
    """The base config with each applied hypothesis's change merged in, in declaration order."""
    config = dict(rules.base_config)
    for name, hypothesis in state.hypotheses.items():
        if name in applied:
            config.update(hypothesis.change)
    return config


def planned_runs(state: StudyState, rules: StudyRules, step: int) -> list[PlannedRun]:
    """Every run of a planned step, by slot, each at a seed of the study's panel that its
    configuration has not run at. A candidate runs first where the incumbent has run, and the
    incumbent runs only where it has not, so the luck of a seed cancels from their difference
    as far as the two share it."""
    plan, runs, study, incumbent = state.plans[step], state.runs, rules.study, state.incumbent
    if plan.kind in ("base", "rerun_incumbent"):
        groups = [("base" if plan.kind == "base" else "incumbent", incumbent,
                   candidate_seeds(study, runs, incumbent, incumbent, step, plan.n_runs))]
    elif plan.kind == "run":
        candidate = incumbent | move_members(plan.hypothesis)
        seeds = candidate_seeds(study, runs, incumbent, candidate, step, plan.n_runs)
        groups = [("candidate", candidate, seeds),
                  ("incumbent", incumbent,
                   incumbent_seeds(runs, incumbent, step, seeds)[:plan.incumbent_runs])]
    else:
        groups = []
    if plan.configs:  # a design's runs are candidate runs of their own configurations
        configs = [incumbent | frozenset(subset) for subset in plan.configs]
        groups = [("candidate", applied, [seed]) for applied, seed
                  in zip(configs, design_seeds(study, runs, incumbent, configs, step))]
    rule = rules.policy.seed_rule()
    if rule != "panel":  # the ratchet's own seeds, one per run in slot order
        slots = [(role, applied) for role, applied, seeds in groups for _ in seeds]
        groups = [(role, applied, [seed]) for (role, applied), seed
                  in zip(slots, ratchet_seeds(study, runs, step, rule, len(slots)))]
    runs: list[PlannedRun] = []
    for role, applied, seeds in groups:
        for seed in seeds:
            runs.append(PlannedRun(step, len(runs), role, applied,
                                   config_for(state, rules, applied), int(seed)))
    return runs
