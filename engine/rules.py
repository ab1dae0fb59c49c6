"""The rules a study's state is read with, as pure functions of a `StudyState` and the
study's fixed `StudyRules`: the open moves, what the policy sees, the budget, pairing, stopping
and the runs of each step; and `replay`, which folds a ledger's records through the transitions
of engine.state in the order the live loop (engine.core) took them.

While several steps are in flight, what the policy sees is built from the concluded steps' runs
only (`settled_runs`), and the seed panel counts every run planned (`committed_runs`), so that
no choice depends on which runs in flight happen to have finished.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from itertools import combinations
from typing import Any

import numpy as np

from engine.panel import candidate_seeds, design_seeds, incumbent_seeds, ratchet_seeds
from engine.records import PlannedSlot, StepDecision, StepPlan
from engine.runner import PlannedRun
from engine.state import (
    StudyRules,
    StudyState,
    with_decision,
    with_plan,
    with_run,
    with_step_done,
    with_step_observed,
)
from envs.patched import PATCHES_KEY
from memory import Ledger
from policies import RunRecord, StudyView
from policies.types import MoveMenu, move_members


def with_slots(state: StudyState, rules: StudyRules, step: int) -> StudyState:
    """The state with the step's runs fixed in its plan (a plan that has them keeps them)."""
    plan = state.plans[step]
    if plan.runs or plan.kind == "stop":
        return state
    slots = tuple(PlannedSlot(r.role, tuple(sorted(r.applied)), r.seed)
                  for r in planned_runs(state, rules, step))
    return dataclasses.replace(state, plans={**state.plans,
                                             step: dataclasses.replace(plan, runs=slots)})


def replay(ledger: Ledger, study_id: int, start: StudyState, rules: StudyRules) -> StudyState:
    """The state the ledger's records lead to from `start`, in the order the live study took:
    each step's plan once as many steps were concluded as when it was planned (its `after`;
    an older plan's is its step), with its runs; and each concluded step's observations,
    decision and seconds, in step order."""
    runs_by_step: dict[int, list[dict]] = {}
    for row in ledger.runs(study_id):
        runs_by_step.setdefault(row["step"], []).append(row)
    decisions = {row["step"]: StepDecision.from_json(row) for row in ledger.decisions(study_id)}
    seconds = {row["step"]: row["appraisal"].get("seconds", 0.0) for row in ledger.steps(study_id)}
    plans = [(step, StepPlan.from_json(record))
             for step, record in sorted(ledger.plans(study_id).items())]
    state = start

    def fold_plans(concluded: int) -> None:
        nonlocal state
        while plans and (plans[0][0] if plans[0][1].after is None
                         else plans[0][1].after) <= concluded:
            step, plan = plans.pop(0)
            state = with_slots(with_plan(state, step, plan), rules, step)
            for row in runs_by_step.get(step, []):
                state = with_run(state, run_record(row, step, rules), row["seconds"])

    for done, step in enumerate(sorted(seconds)):
        fold_plans(done)
        state = with_step_observed(state, step)
        if step in decisions:
            state = with_decision(state, decisions[step])
        state = with_step_done(state, step, seconds[step])
    fold_plans(len(seconds))
    return dataclasses.replace(state, clock=0.0)


def run_record(row: Mapping[str, Any], step: int, rules: StudyRules) -> RunRecord:
    """A ledger run row as the policies see it."""
    return RunRecord(config=frozenset(row["hypotheses"]),
                     value=rules.value_of(row["metric"], row["status"]), status=row["status"],
                     seed=row["seed"], step=step, role=row["role"], slot=row["slot"],
                     device=device_label(row.get("extra") or {}))


def device_label(extra: Mapping[str, Any]) -> str | None:
    """The hardware a run was made on, as the model tells devices apart: the name the env
    reports (the trainer's device_name, a GPU's name: two slots of one kind are one device),
    else the runner's slot ("cuda:1") or Ray node; None when nothing says."""
    for key in ("device_name", "device", "node"):
        if extra.get(key):
            return str(extra[key])
    return None


def open_moves(state: StudyState, rules: StudyRules) -> tuple[list[str], frozenset[str]]:
    """(the moves open to a trial, the reverted ones reopened among them): the policy's rule,
    less the moves that would apply two hypotheses setting the same key. Those are
    alternatives, not parts of one configuration: merged, the later would silently win, and
    the ledger would name a hypothesis that did not run."""
    menu = MoveMenu(tuple(state.hypotheses), state.incumbent, state.closed, rules.interactions,
                    candidate_runs(state))
    moves, reopened = rules.policy.open_moves(menu, state.beliefs)
    conflicts = conflicting_pairs(state, rules)
    composable = [move for move in moves
                  if not any(frozenset(pair) in conflicts
                             for pair in combinations(state.incumbent | move_members(move), 2))
                  and patch_conflict(state, rules, state.incumbent | move_members(move)) is None]
    return composable, reopened & frozenset(composable)


def patches_of(state: StudyState, applied: frozenset[str]) -> list[str]:
    """The code patches of the applied hypotheses, in declaration order (the order they apply)."""
    return [h.patch for name, h in state.hypotheses.items() if name in applied and h.patch]


def patch_conflict(state: StudyState, rules: StudyRules, applied: frozenset[str]) -> str | None:
    """Why the applied hypotheses' patches do not apply together, or None. A patch that no
    longer applies on top of the incumbent's is not offered; one whose lines only moved is
    rebased (envs.patch)."""
    patches = patches_of(state, applied)
    if len(patches) < 2 or rules.patch_problem is None:
        return None
    return rules.patch_problem(patches)


def conflicting_pairs(state: StudyState, rules: StudyRules) -> frozenset[frozenset[str]]:
    """Every pair of known hypotheses that set a common config key, or whose code patches do
    not apply together on top of the incumbent's (alternatives)."""
    setters: dict[str, list[str]] = {}
    for name, hypothesis in state.hypotheses.items():
        for key in hypothesis.change:
            setters.setdefault(key, []).append(name)
    pairs = {frozenset((a, b)) for names in setters.values()
             for i, a in enumerate(names) for b in names[i + 1:]}
    patched = [name for name, h in state.hypotheses.items()
               if h.patch and name not in state.incumbent]
    pairs |= {frozenset(pair) for pair in combinations(patched, 2)
              if patch_conflict(state, rules, state.incumbent | frozenset(pair)) is not None}
    return frozenset(pairs)


def candidate_runs(state: StudyState, concluding: int | None = None) -> dict[str, int]:
    """Each tried move's candidate runs over all its trials (crashed ones too): the count its
    keep rule's looks and cap read, since a reopened trial goes on from the earlier runs. Only
    the runs of concluded steps (and of the step `concluding`) count: which runs of the steps in
    flight have finished is a matter of timing, and no choice may depend on it."""
    runs: dict[str, int] = {}
    for record in settled_runs(state, concluding):
        move = state.plans[record.step].hypothesis
        if record.role == "candidate" and move:
            runs[move] = runs.get(move, 0) + 1
    return runs


def settled_runs(state: StudyState, concluding: int | None = None) -> list[RunRecord]:
    """The recorded runs of the concluded steps (and of the step `concluding`)."""
    return [r for r in state.runs if r.step in state.concluded or r.step == concluding]


def pending_runs(state: StudyState) -> list[RunRecord]:
    """The runs planned in the steps in flight and not recorded yet, as records with no value
    (status "pending"): what the seed panel and the policies count as committed."""
    recorded = {(r.step, r.slot) for r in state.runs}
    return [RunRecord(frozenset(slot.hypotheses), None, "pending", slot.seed, step,
                      slot.role, index)
            for step in state.unconcluded
            for index, slot in enumerate(state.plans[step].runs)
            if (step, index) not in recorded]


def committed_runs(state: StudyState) -> list[RunRecord]:
    """Every run made or planned, recorded ones with their outcome: the seeds taken."""
    return [*state.runs, *pending_runs(state)]


def in_flight_moves(state: StudyState, concluding: int | None = None) -> frozenset[str]:
    """The moves of the trial steps in flight (other than `concluding`): not to be chosen
    again until they conclude."""
    return frozenset(state.plans[s].hypothesis for s in state.unconcluded
                     if s != concluding and state.plans[s].hypothesis is not None)


def view(state: StudyState, rules: StudyRules, concluding: int | None = None) -> StudyView:
    """What the policy sees: the open moves less those in flight, each move's runs over all
    its trials, the runs a step of each open move would make, and the runs in flight. Runs
    count once their step concludes (the step `concluding` is judged on its own), so that
    what the policy sees never depends on which runs in flight happen to have finished."""
    flying = in_flight_moves(state, concluding)
    candidates = [m for m in open_moves(state, rules)[0] if m not in flying]
    settled = settled_runs(state, concluding)
    runs_per = {move: 0 for move in candidates} | candidate_runs(state, concluding)
    undecided = [p.hypothesis for step, p in sorted(state.plans.items())
                 if p.hypothesis in candidates and (p.hypothesis not in state.closed
                                                    or step > state.closed[p.hypothesis].step)]
    times = [t for step, t in state.run_seconds if step in state.concluded]
    mean_seconds = float(np.mean(times)) if times else 0.0
    n = fit_to_budget(state, rules, rules.study.replicates_per_step)
    left = rules.study.budget_trials - state.runs_committed - n
    step_runs = {move: (n, max(0, min(left, paired_runs(state, rules, move, n))))
                 for move in candidates}
    pending = [RunRecord(frozenset(slot.hypotheses), None, "pending", slot.seed, step, slot.role,
                         index)
               for step in state.unconcluded if step != concluding
               for index, slot in enumerate(state.plans[step].runs)]  # outcomes stay unseen
    return StudyView(incumbent=state.incumbent, candidates=candidates, history=settled,
                     runs_per_hypothesis=runs_per,
                     runs_left=rules.study.budget_trials - state.runs_committed,
                     seconds_left=None, expected_seconds={c: mean_seconds for c in candidates},
                     open_hypothesis=undecided[-1] if undecided else None, step_runs=step_runs,
                     conflicts=conflicting_pairs(state, rules), in_flight=flying, pending=pending)


def incumbent_runs_per_step(rules: StudyRules) -> int:
    return rules.policy.incumbent_runs(rules.study.incumbent_runs_per_step)


def reserved_incumbent_runs(rules: StudyRules) -> int:
    """Runs kept back for pairing: every step's, unless pairing is adaptive (then a step near
    the end of the budget may go unpaired)."""
    return 0 if rules.study.adaptive_incumbent_runs else incumbent_runs_per_step(rules)


def fit_to_budget(state: StudyState, rules: StudyRules, n_runs: int) -> int:
    """The runs a step may make: at most replicates_per_step and the runs left (>= 1)."""
    left = rules.study.budget_trials - state.runs_committed - reserved_incumbent_runs(rules)
    return max(1, min(n_runs, rules.study.replicates_per_step, left))


def design_room(state: StudyState, rules: StudyRules) -> int:
    """The runs a design step may make: the runs left, less those kept back for pairing (>= 1)."""
    return max(1, rules.study.budget_trials - state.runs_committed
               - reserved_incumbent_runs(rules))


def paired_runs(state: StudyState, rules: StudyRules, move: str, n_candidate: int) -> int:
    """Incumbent runs to pair with n_candidate runs of the move: one at each seed of the
    candidate's runs that the incumbent has no run at, at most incumbent_runs_per_step, or with
    adaptive_incumbent_runs only when m incumbent runs narrow the posterior of
    mu(candidate) - mu(incumbent) at least as much as m extra candidate runs would. An
    incumbent measured over several trials is known well; more runs of it buy little."""
    candidate = state.incumbent | move_members(move)
    step, runs, study = state.next_step, committed_runs(state), rules.study
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
    if study.budget_trials - state.runs_committed < 1 + reserved_incumbent_runs(rules):
        return f"budget_trials spent ({state.runs_committed} of {study.budget_trials} runs)"
    if study.budget_seconds and state.elapsed >= study.budget_seconds:
        return f"budget_seconds spent ({state.elapsed:.0f} s of {study.budget_seconds:g} s)"
    if not open_moves(state, rules)[0]:
        return "every hypothesis is decided"
    return ""


def config_for(state: StudyState, rules: StudyRules, applied: frozenset[str]) -> dict:
    """The base config with each applied hypothesis's change merged in, in declaration order,
    and its code patches in that order under PATCHES_KEY."""
    config = dict(rules.base_config)
    for name, hypothesis in state.hypotheses.items():
        if name in applied:
            config.update(hypothesis.change)
    patches = patches_of(state, applied)
    if patches:
        config[PATCHES_KEY] = patches
    return config


def planned_runs(state: StudyState, rules: StudyRules, step: int) -> list[PlannedRun]:
    """Every run of a planned step, by slot: as its plan fixed them, or (for a step being planned)
    each at a seed of the study's panel that its configuration has not run or been planned at.
    A candidate runs first where the incumbent has run, and the incumbent runs only where it
    has not, so the luck of a seed cancels from their difference as far as the two share it."""
    plan = state.plans[step]
    if plan.runs:
        return [PlannedRun(step, slot, r.role, frozenset(r.hypotheses),
                           config_for(state, rules, frozenset(r.hypotheses)), r.seed)
                for slot, r in enumerate(plan.runs)]
    runs, study, incumbent = committed_runs(state), rules.study, state.incumbent
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
                  in zip(configs, design_seeds(study, runs, incumbent, configs, step,
                                               plan.blocks))]
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


def waiting(state: StudyState) -> bool:
    """Whether the newest plan is a wait for the steps in flight (a stop recorded with new
    proposals) and nothing has concluded since: its planning round ended with it."""
    if not state.plans:
        return False
    newest = max(state.plans)
    plan = state.plans[newest]
    return (plan.kind == "stop" and newest in state.unconcluded
            and plan.after == len(state.concluded))
