"""The study core as a state machine, and its rules as functions of a state: no loop, no
ledger, no env. Runs are drawn here from a known linear model."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from beliefs import BeliefPrior, Beliefs, Observation
from beliefs import Hypothesis as BeliefHypothesis
from engine.config import StudySection
from engine.core import (
    Conclude,
    Propose,
    Proposed,
    RecordPlan,
    Run,
    RunFinished,
    Stop,
    advance,
    start,
)
from engine.panel import panel_seed
from engine.proposer import Hypothesis
from engine.records import StepDecision, StepPlan
from engine.rules import (
    fit_to_budget,
    open_moves,
    paired_runs,
    planned_runs,
    stop_reason,
    view,
)
from engine.state import (
    StudyRules,
    StudyState,
    with_decision,
    with_plan,
    with_run,
    with_step_done,
    with_step_observed,
)
from policies import KeepRule, RunRecord, make_policy

NAMES = ("a", "b", "c")
EFFECTS = {"a": -1.0, "b": 0.0, "c": 0.3}  # lower is better: a helps, b does nothing, c hurts


def section(**overrides) -> StudySection:
    values = dict(name="unit", out_dir=Path("/nonexistent"), seed=5, budget_trials=30,
                  budget_seconds=0.0, replicates_per_step=2, incumbent_runs_per_step=1,
                  adaptive_incumbent_runs=False, base_runs=2)
    return StudySection(**{**values, **overrides})


def make_rules(policy: str = "efe", interactions: bool = False, **study) -> StudyRules:
    rule = KeepRule()
    return StudyRules(study=section(**study), policy=make_policy(policy, keep_rule=rule),
                      keep_rule=rule, interactions=interactions, kappa=2.0, sign=1.0,
                      base_config={"x": 1})


def fresh(interactions: bool = False) -> StudyState:
    hypotheses = [Hypothesis(n, "knobs", {n: i + 2}) for i, n in enumerate(NAMES)]
    return StudyState.start(hypotheses, BeliefPrior(), interactions)


def outcome(config: frozenset[str], seed: int) -> float:
    """The world: 1 + the effects applied + N(0, 0.2^2) noise from the run's seed."""
    noise = np.random.default_rng(seed).normal(0.0, 0.2)
    return 1.0 + sum(EFFECTS[n] for n in config) + float(noise)


def finish(state, rules, command: Run, order=None, crash: set[int] = frozenset()):
    """Feed a Run command's runs back as events (in `order` of slots), a second of the session
    apart: the last one concludes the step."""
    runs = list(command.runs)
    order = list(order if order is not None else range(len(runs)))
    commands: list = []
    began = state.clock
    for count, index in enumerate(order, start=1):
        assert commands == []  # nothing happens before the step's last run is in
        p = runs[index]
        value = None if p.slot in crash else outcome(p.applied, p.seed)
        record = RunRecord(p.applied, value, "crash" if value is None else "ok", p.seed,
                           p.step, p.role, p.slot)
        state, commands = advance(state, rules, RunFinished(record, 1.0, began + count))
    return state, commands


def after_baseline(rules):
    """The state once the baseline step is planned, run and concluded."""
    state, commands = start(fresh(), rules)
    return finish(state, rules, commands[1])[0]


def first_trial(rules, proposed=()):
    """The state and the commands once the policy has planned the first trial."""
    return advance(after_baseline(rules), rules, Proposed(1, proposed))


def test_a_fresh_study_plans_the_baseline_then_asks_for_proposals():
    rules = make_rules()
    state, commands = start(fresh(), rules)
    assert [type(c) for c in commands] == [RecordPlan, Run]
    plan, run = commands[0].plan, commands[1]
    assert (plan.kind, plan.n_runs, commands[0].step) == ("base", 2, 0)
    base_run = ("base", frozenset(), {"x": 1})
    assert [(r.role, r.applied, r.config) for r in run.runs] == [base_run] * 2
    state, commands = finish(state, rules, run)
    assert [type(c) for c in commands] == [Conclude, Propose]
    assert commands[0].decision is None and commands[1].step == 1
    assert state.concluded == {0} and state.beliefs.n_observations == 2


@pytest.mark.parametrize("base_runs", [1, 2])
def test_a_trial_runs_at_the_incumbents_seeds_and_fills_only_the_seeds_it_lacks(base_runs):
    """The candidate's two runs go first to the panel seeds the base has run at; the incumbent
    runs only at a candidate seed where it has no run (one base run: one incumbent run)."""
    rules = make_rules(base_runs=base_runs)
    state, (record, run) = first_trial(rules)
    plan = record.plan
    base_seeds = [r.seed for r in state.runs_of(0)]
    assert base_seeds == [panel_seed(rules.study, i) for i in range(base_runs)]
    assert plan.kind == "run" and plan.n_runs == 2 and plan.incumbent_runs == 2 - base_runs
    candidates = [r for r in run.runs if r.role == "candidate"]
    incumbents = [r for r in run.runs if r.role == "incumbent"]
    assert all(r.applied == {plan.hypothesis} for r in candidates)
    assert [r.seed for r in candidates] == [panel_seed(rules.study, 0), panel_seed(rules.study, 1)]
    assert [r.seed for r in incumbents] == [panel_seed(rules.study, 1)] * (2 - base_runs)


def test_no_configuration_runs_at_a_seed_twice_and_the_panel_grows_past_its_end():
    rules = make_rules(seed_panel=3, base_runs=2, replicates_per_step=2)
    state = after_baseline(rules)
    for step in (1, 2):  # two more base steps: 2 + 2 + 2 runs of the base config
        state = with_plan(state, step, StepPlan("rerun_incumbent", None, 2, "again"))
        state, _ = finish(state, rules, Run(step, state.plans[step],
                                            tuple(planned_runs(state, rules, step))))
    seeds = [r.seed for r in state.runs]
    assert seeds == [panel_seed(rules.study, i) for i in range(6)]


def ratchet_seeds_over(rule: str, steps: int) -> list[tuple[str, frozenset[str], int]]:
    """(role, config, seed) of every run of a ratchet study with `ratchet_seed = rule`."""
    base = make_rules(policy="ratchet", base_runs=2)
    policy = make_policy("ratchet", keep_rule=base.keep_rule, ratchet_seed=rule)
    rules = dataclasses.replace(base, policy=policy)
    state, commands = start(fresh(), rules)
    for _ in range(steps):
        run = next(c for c in commands if isinstance(c, Run))
        state, commands = finish(state, rules, run)
        for propose in [c for c in commands if isinstance(c, Propose)]:
            state, commands = advance(state, rules, Proposed(propose.step, ()))
    return [(r.role, r.config, r.seed) for r in state.runs]


def test_the_fixed_seed_ratchet_runs_everything_at_one_seed():
    runs = ratchet_seeds_over("fixed", 5)
    assert len(runs) == 2 + 4 and {seed for _, _, seed in runs} == {panel_seed(section(), 0)}
    assert len({config for _, config, _ in runs}) > 2  # several configs, one seed


def test_the_fresh_seed_ratchet_never_reuses_a_seed():
    runs = ratchet_seeds_over("fresh", 5)
    assert [seed for _, _, seed in runs] == [panel_seed(section(), i) for i in range(6)]


def test_a_ratchet_seed_rule_it_does_not_know_is_refused():
    with pytest.raises(ValueError, match="ratchet_seed must be one of"):
        make_policy("ratchet", ratchet_seed="lucky")


def test_runs_that_finish_out_of_order_conclude_exactly_as_in_order():
    rules = make_rules(base_runs=1)
    state, (_, run) = first_trial(rules)
    in_order, a = finish(state, rules, run)
    shuffled, b = finish(state, rules, run, order=[2, 0, 1])
    assert a[0].decision == b[0].decision and a[0].appraisal == b[0].appraisal
    means = [s.beliefs.posterior_mean([frozenset(NAMES)]).mean for s in (in_order, shuffled)]
    assert np.array_equal(*means)
    assert in_order.incumbent == shuffled.incumbent and in_order.closed == shuffled.closed


def test_a_step_is_not_concluded_before_all_its_runs_are_in():
    rules = make_rules()
    state, commands = start(fresh(), rules)
    first = commands[1].runs[0]
    record = RunRecord(first.applied, 1.0, "ok", first.seed, 0, first.role, first.slot)
    state, commands = advance(state, rules, RunFinished(record, 1.0))
    assert commands == [] and state.concluded == frozenset()
    with pytest.raises(ValueError, match="recorded already"):
        advance(state, rules, RunFinished(record, 1.0))


def test_start_resumes_only_the_missing_runs_of_the_unconcluded_step():
    rules = make_rules(base_runs=1)
    state, (_, run) = first_trial(rules)
    done = run.runs[1]
    state, _ = advance(state, rules, RunFinished(
        RunRecord(done.applied, 0.5, "ok", done.seed, 1, done.role, done.slot), 1.0))
    resumed_state, resumed = start(state, rules)
    assert resumed_state == dataclasses.replace(state, clock=0.0)  # a new session's clock
    assert [type(c) for c in resumed] == [Run]
    assert [r.slot for r in resumed[0].runs] == [0, 2]
    assert resumed[0].runs == tuple(r for r in run.runs if r.slot != 1)


def test_a_trial_whose_every_run_crashed_is_reverted_unjudged_and_not_reopened():
    rules = make_rules(incumbent_runs_per_step=0)
    state, (record, run) = first_trial(rules)
    move = record.plan.hypothesis
    state, (conclusion, _) = finish(state, rules, run, crash={0, 1})
    decision = conclusion.decision
    assert (decision.verdict, decision.p_better, decision.judged) == ("revert", None, False)
    assert decision.reason.startswith("every run crashed")
    assert state.closed[move].judged is False
    # once every move is closed, a judged revert that is not called worse comes back; this not
    for other in set(NAMES) - {move}:
        state = with_decision(state, StepDecision(9, other, "revert", 0.5, -0.1, 0.1, 2, "futile"))
    moves, reopened = open_moves(state, rules)
    assert move not in moves and move not in reopened


def judged_revert_state(p_hint: float):
    """Every move closed by a revert after a baseline of four runs; `a` was tried twice."""
    rules = make_rules()
    state = fresh()
    state = with_plan(state, 0, StepPlan("base", None, 4, "baseline"))
    for slot in range(4):
        state = with_run(state, RunRecord(frozenset(), outcome(frozenset(), slot), "ok", slot,
                                          0, "base", slot), 1.0)
    state = with_step_done(with_step_observed(state, 0), 0, 4.0)
    state = with_plan(state, 1, StepPlan("run", "a", 2, "try a"))
    for slot in range(2):
        value = outcome(frozenset({"a"}), 10 + slot) + p_hint
        state = with_run(state, RunRecord(frozenset({"a"}), value, "ok", 10 + slot, 1,
                                          "candidate", slot), 1.0)
    state = with_step_done(with_step_observed(state, 1), 1, 2.0)
    for name in NAMES:
        state = with_decision(state, StepDecision(1, name, "revert", 0.5, None, None, 2, "futile"))
    return state, rules


def test_reverted_moves_reopen_when_nothing_else_is_open_and_the_posterior_allows():
    """Reopened: exactly the judged reverts whose P(better) exceeds 1 - threshold, computed
    here from the beliefs directly."""
    for shift in (0.0, 3.0):  # a's runs as the world gives them, then made much worse
        state, rules = judged_revert_state(shift)
        moves, reopened = open_moves(state, rules)
        expected = set()
        for name in NAMES:
            d = state.beliefs.difference(frozenset({name}), frozenset())
            null = state.beliefs.null_probability(frozenset({name}), frozenset())
            p_better = (1 - null) * float(d.cdf(np.array([0.0]))[0])
            if p_better > 1 - rules.keep_rule.threshold:
                expected.add(name)
        assert reopened == expected and set(moves) == expected
        assert ("a" in reopened) == (shift == 0.0)


def test_with_interactions_a_move_reverted_on_an_older_incumbent_reopens():
    rules = make_rules(interactions=True)
    state = fresh(interactions=True)
    state = with_decision(state, StepDecision(1, "b", "revert", 0.2, None, None, 2, "futile"))
    moves, reopened = open_moves(state, rules)
    assert "b" not in moves and not reopened  # reverted on the present incumbent: closed
    state = with_decision(state, StepDecision(2, "a", "keep", 0.99, None, None, 2, "better"))
    moves, reopened = open_moves(state, rules)
    assert reopened == {"b"} and moves == ["b", "c"]
    assert view(state, rules).runs_per_hypothesis["b"] == 0  # a new trial counts from its revert
    # pairs of reverted moves are offered by a policy that scores configurations
    # (c, reverted on the present incumbent, stays closed; its pair with b is a new move)
    state = with_decision(state, StepDecision(3, "c", "revert", 0.2, None, None, 2, "futile"))
    assert open_moves(state, rules)[0] == ["b", "b + c"]
    assert open_moves(state, make_rules("learntropy", interactions=True))[0] == ["b"]


def test_the_ratchet_reopens_everything_and_never_pairs():
    rules = make_rules("ratchet", interactions=True)
    state = with_decision(fresh(True), StepDecision(1, "b", "revert", None, None, None, 1, "worse"))
    assert open_moves(state, rules) == (["a", "b", "c"], frozenset())
    assert paired_runs(state, rules, "a", 2) == 0
    assert fit_to_budget(state, rules, 5) == 2


@pytest.mark.parametrize("adaptive", [False, True])
def test_the_budget_at_its_edge(adaptive):
    """budget 6: with fixed pairing one run is held back for each step's incumbent run."""
    rules = make_rules(budget_trials=6, adaptive_incumbent_runs=adaptive)
    state = with_plan(fresh(), 0, StepPlan("base", None, 4, "baseline"))
    for slot in range(4):
        state = with_run(state, RunRecord(frozenset(), 1.0 + 0.1 * slot, "ok", slot, 0, "base",
                                          slot), 1.0)
    state = with_step_done(with_step_observed(state, 0), 0, 4.0)
    assert fit_to_budget(state, rules, 10) == (2 if adaptive else 1)
    assert stop_reason(state, rules) == ""
    state = with_plan(state, 1, StepPlan("rerun_incumbent", None, 1, "again"))
    state = with_run(state, RunRecord(frozenset(), 1.0, "ok", 9, 1, "incumbent", 0), 1.0)
    state = with_step_done(with_step_observed(state, 1), 1, 1.0)
    reason = stop_reason(state, rules)
    assert (reason == "") == adaptive  # one run left: enough only when nothing is held back
    if adaptive:
        assert fit_to_budget(state, rules, 10) == 1
    else:
        assert reason.startswith("budget_trials spent (5 of 6 runs)")


def test_budget_seconds_stop_the_study():
    rules = make_rules(budget_seconds=10.0)
    state = with_step_done(with_plan(fresh(), 0, StepPlan("base", None, 0, "b")), 0, 10.0)
    assert stop_reason(state, rules) == "budget_seconds spent (10 s of 10 s)"


def test_the_incumbent_runs_only_at_seeds_it_lacks_and_adaptively_where_that_pays():
    """Forty base runs: a candidate's runs go to base seeds, so no incumbent run is needed.
    One base run at a seed the candidate has run at already: its new runs are at seeds the base
    lacks, and one incumbent run narrows the comparison more than one more candidate run
    would, so adaptive pairing pays for it; fixed pairing fills those seeds up to
    incumbent_runs_per_step."""
    for base_runs, candidate_runs, expected in ((40, 0, (0, 0, 0)), (1, 1, (1, 1, 2))):
        state = with_plan(fresh(), 0, StepPlan("base", None, base_runs, "baseline"))
        state = with_plan(state, 1, StepPlan("run", "a", max(candidate_runs, 1), "earlier"))
        for step, role, config, n in ((0, "base", frozenset(), base_runs),
                                      (1, "candidate", frozenset("a"), candidate_runs)):
            for slot in range(n):
                seed = 1000 + slot
                state = with_run(state, RunRecord(config, outcome(config, seed), "ok", seed,
                                                  step, role, slot), 1.0)
            state = with_step_done(with_step_observed(state, step), step, 1.0)
        pairing = (paired_runs(state, make_rules(adaptive_incumbent_runs=True), "a", 2),
                   paired_runs(state, make_rules(), "a", 2),
                   paired_runs(state, make_rules(incumbent_runs_per_step=3), "a", 2))
        assert pairing == expected


def test_proposals_become_hypotheses_and_are_recorded_with_the_plan():
    rules = make_rules()
    new = (Hypothesis("d", "other", {"x": 9}),)
    state, (record, _) = first_trial(rules, new)
    assert "d" in state.hypotheses and record.plan.proposed == new
    assert [h.name for h in state.beliefs.hypotheses] == [*NAMES, "d"]
    assert StepPlan.from_json(record.plan.to_json()) == record.plan


def test_a_policy_stop_after_proposals_records_them_in_one_step():
    rules = make_rules()
    state = after_baseline(rules)
    for name in NAMES:  # close everything as a keep: nothing is left to try but the proposal
        state = with_decision(state, StepDecision(1, name, "keep", 0.99, None, None, 2, "kept"))
    spent = dataclasses.replace(rules, study=section(budget_trials=2))
    new = (Hypothesis("d", "other", {"x": 9}),)
    state, commands = advance(state, spent, Proposed(1, new))
    conclusion, stop = commands
    assert isinstance(stop, Stop) and stop.reason == "budget spent: no runs left"
    assert conclusion.records_plan and conclusion.plan.kind == "stop"
    assert conclusion.plan.proposed == new and conclusion.decision is None
    assert state.concluded == {0, 1} and state.pending is None and state.next_step == 2


def test_moves_that_would_set_one_key_twice_are_not_open():
    """Alternatives for one key: applied together, one change would silently undo the other."""
    rules = make_rules(interactions=True)
    names = ("lr_low", "lr_high", "depth")
    state = StudyState.start([Hypothesis("lr_low", "k", {"lr": 0.1}),
                              Hypothesis("lr_high", "k", {"lr": 0.3}),
                              Hypothesis("depth", "k", {"n_layer": 3})], BeliefPrior(), True)
    moves, _ = open_moves(state, rules)
    assert set(moves) <= {*names, "depth + lr_high", "depth + lr_low"} and "lr_high" in moves
    state = with_decision(state, StepDecision(1, "lr_low", "keep", 0.99, None, None, 2, "kept"))
    moves, _ = open_moves(state, rules)
    assert moves and not any("lr_high" in move for move in moves)


def test_records_round_trip_through_json():
    plan = StepPlan("run", "a + b", 3, "why", {"efe": -1.5}, (Hypothesis("a", "k", {"x": 1}),), 1)
    assert StepPlan.from_json(plan.to_json()) == plan
    blocked = StepPlan("design", None, 3, "screen", configs=(("a",), ("b",), ("a",)),
                       blocks=(0, 0, 1))
    assert StepPlan.from_json(blocked.to_json()) == blocked
    with pytest.raises(ValueError, match="repeats a configuration"):
        StepPlan("design", None, 2, "", configs=(("a",), ("a",)), blocks=(0, 0))
    decision = StepDecision(4, "a", "keep", 0.97, -0.3, -0.1, 5, "better")
    assert StepDecision.from_json({"step": 4, "hypothesis": "a", **decision.to_json()}) == decision
    with pytest.raises(ValueError, match="needs hypothesis"):
        StepPlan("run", None, 1, "")
    with pytest.raises(ValueError, match="pairs incumbent runs"):
        StepPlan("base", None, 1, "", incumbent_runs=1)


def test_planned_runs_apply_the_base_the_incumbents_and_the_moves_changes():
    rules = make_rules()
    state = with_decision(fresh(), StepDecision(1, "c", "keep", 0.99, None, None, 2, "kept"))
    state = with_plan(state, 2, StepPlan("run", "a", 1, "try", incumbent_runs=1))
    runs = planned_runs(state, rules, 2)
    assert [(r.role, r.config) for r in runs] == [("candidate", {"x": 1, "c": 4, "a": 2}),
                                                  ("incumbent", {"x": 1, "c": 4})]
    assert [r.seed for r in runs] == [panel_seed(rules.study, 0)] * 2


def test_beliefs_after_a_step_equal_a_refit_of_all_its_runs():
    rules = make_rules()
    state, (_, run) = first_trial(rules)
    state, _ = finish(state, rules, run)
    refit = Beliefs([BeliefHypothesis(n, "knobs") for n in NAMES], prior=BeliefPrior())
    refit.update([Observation(r.config, r.value) for r in state.runs])
    for config in (frozenset(), frozenset({"a"}), frozenset(NAMES)):
        ours = state.beliefs.posterior_mean([config])
        theirs = refit.posterior_mean([config])
        assert np.allclose(ours.mean, theirs.mean, rtol=1e-10, atol=1e-12)
