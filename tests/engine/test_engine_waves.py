"""Several steps in flight at once (`[runner] workers` > 1): planned only at conclusions, each
concluded in step order, so that the runs and decisions depend on the runs' outcomes alone and
never on which run finished first; runs in flight are not chosen again; a step overtaken by a
keep stays data; and a study killed with runs in flight resumes to the uninterrupted ledger."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from beliefs import BeliefPrior
from engine.config import POLICY_KINDS, load_config
from engine.core import Conclude, Propose, Proposed, RecordPlan, Run, RunFinished, Stop, advance
from engine.core import start as start_core
from engine.proposer import Hypothesis
from engine.records import StepPlan
from engine.rules import planned_runs, with_slots
from engine.simulated import SimulatedRunner
from engine.state import StudyRules, StudyState, with_plan
from engine.study import Study
from policies import Action, KeepRule, RunRecord, make_policy
from policies.types import TERM_UNITS
from tests.engine.test_engine_core import section
from tests.engine.test_engine_loop import (
    CONFIG,
    StopsAfter,
    ledger,
    same_state,
    stopped_then_resumed,
)
from tests.engine.test_engine_runner import DESIGN_CONFIG, SLEEPING_EXPERIMENT

REPO = Path(__file__).resolve().parents[2]
EFFECTS = {"a": -0.8, "b": -0.4, "c": 0.0, "d": 0.2, "e": -0.1, "f": 0.5}


def world(config: frozenset[str], seed: int) -> float:
    """1 + the effects applied + N(0, 0.3^2) noise drawn from the run's seed and config."""
    noise = np.random.default_rng([seed, len(config), *sorted(ord(n) for n in config)])
    return 1.0 + sum(EFFECTS[n] for n in config) + float(noise.normal(0.0, 0.3))


def rules_for(policy: str, workers: int, **study) -> StudyRules:
    rule = KeepRule(max_replicates=6)
    values = dict(budget_trials=40, replicates_per_step=2, incumbent_runs_per_step=1,
                  base_runs=2) | study
    return StudyRules(study=section(**values), policy=make_policy(policy, keep_rule=rule),
                      keep_rule=rule, interactions=False, kappa=2.0, sign=1.0,
                      base_config={}, workers=workers)


def fresh(names=tuple(EFFECTS)) -> StudyState:
    return StudyState.start([Hypothesis(n, "knobs", {n: 1}) for n in names], BeliefPrior(),
                            False)


@dataclasses.dataclass
class Drive:
    """A study driven through the core with a pool of runs in flight, finished in an order
    drawn from `order_seed` (None: the order they were planned in)."""

    state: StudyState
    plans: list = dataclasses.field(default_factory=list)
    conclusions: list = dataclasses.field(default_factory=list)
    most_in_flight: int = 0
    stop: str = ""
    asked: list = dataclasses.field(default_factory=list)  # (step, steps concluded) per Propose


def drive(rules: StudyRules, order_seed: int | None, state: StudyState | None = None,
          stop_after: int | None = None, proposals: dict | None = None) -> Drive:
    """`proposals`: step -> the hypotheses the proposer gives when asked for that step."""
    rng = np.random.default_rng(order_seed)
    result = Drive(fresh() if state is None else state)
    result.state, queue = start_core(result.state, rules)
    pool, finished = [], 0
    while True:
        if queue:
            command = queue.pop(0)
            if isinstance(command, Stop):
                result.stop = command.reason
                return result
            if isinstance(command, Propose):
                result.asked.append((command.step, len(result.state.concluded)))
                given = (proposals or {}).get(command.step, ())
                result.state, more = advance(result.state, rules, Proposed(command.step, given))
                queue = more + queue
            elif isinstance(command, RecordPlan):
                others = {result.state.plans[s].hypothesis for s in result.state.unconcluded
                          if s != command.step}
                assert command.plan.hypothesis is None or command.plan.hypothesis not in others
                result.plans.append((command.step, command.plan))
            elif isinstance(command, Run):
                pool += list(command.runs)
            elif isinstance(command, Conclude):
                result.conclusions.append((command.step, command.decision))
            result.most_in_flight = max(result.most_in_flight, len(result.state.unconcluded))
            continue
        if stop_after is not None and finished == stop_after:
            return result
        index = 0 if order_seed is None else int(rng.integers(len(pool)))
        p = pool.pop(index)
        record = RunRecord(p.applied, world(p.applied, p.seed), "ok", p.seed, p.step, p.role,
                           p.slot)
        finished += 1
        result.state, queue = advance(result.state, rules, RunFinished(record, 1.0, finished))


@pytest.mark.parametrize("policy", ["voi", "design", "ratchet"])
def test_the_runs_and_decisions_do_not_depend_on_which_run_finishes_first(policy):
    rules = rules_for(policy, workers=4)
    runs = {}
    for order in (None, 0, 1):
        done = drive(rules, order)
        assert done.most_in_flight >= 2  # steps were in flight together
        steps = [step for step, _ in done.conclusions]
        assert steps == sorted(steps) == sorted(done.state.plans)  # in step order, every one
        assert done.state.runs_used == done.state.runs_committed <= 40
        runs[order] = (done.plans, done.conclusions,
                       [(r.step, r.slot, r.config, r.seed, r.value) for r in done.state.runs])
    assert runs[0] == runs[None] and runs[1] == runs[None]


def test_one_worker_plans_one_step_at_a_time():
    done = drive(rules_for("voi", workers=1), order_seed=0)
    assert done.most_in_flight == 1 and done.stop


def test_a_batch_of_four_has_no_duplicates_and_more_joint_information_than_four_copies():
    """Six changes nobody has run: equally uncertain. With four workers the core plans four
    trials before any concludes; each tries another change, and together their runs tell the
    model more (0.5 log det(I + X V X^T)) than four trials of the first choice would."""
    rules = rules_for("voi", workers=4)
    done = drive(rules, order_seed=None, stop_after=2)  # the baseline's two runs are in
    trials = [(step, plan) for step, plan in done.plans if plan.kind == "run"]
    assert len(trials) == 4 and len(done.state.unconcluded) == 4
    moves = [plan.hypothesis for _, plan in trials]
    assert len(set(moves)) == 4
    batch = [r.config for step, _ in trials for r in planned_runs(done.state, rules, step)]
    first = [r.config for r in planned_runs(done.state, rules, trials[0][0])]
    copies = first * 4
    assert len(batch) == len(copies)
    beliefs = done.state.beliefs
    assert beliefs.batch_info_gain(batch) > beliefs.batch_info_gain(copies) + 0.1


def test_a_design_block_planned_beside_another_adds_to_it_instead_of_repeating_it():
    rules = rules_for("design", workers=8)
    done = drive(rules, order_seed=None, stop_after=2)
    blocks = [plan for _, plan in done.plans if plan.kind == "design"]
    assert len(blocks) == 2 and len(done.state.unconcluded) == 2
    first, second = ([frozenset(c) for c in plan.configs] for plan in blocks)
    beliefs = done.state.beliefs
    assert beliefs.batch_info_gain(first + second) > beliefs.batch_info_gain(first + first)


def test_a_trial_overtaken_by_a_keep_is_not_decided_and_its_runs_stay_data():
    """A trial of `a` planned on the base; before it concludes, a keep makes `a` part of the
    incumbent. Its runs still inform the model, and nothing is decided about `a` again."""
    rules = rules_for("voi", workers=1)
    done = drive(rules, order_seed=None, stop_after=2)  # the baseline concluded
    state = with_slots(with_plan(done.state, 2, StepPlan("run", "a", 2, "try a",
                                                          incumbent_runs=0)), rules, 2)
    state = dataclasses.replace(state, incumbent=frozenset({"a"}), kept=("a",),
                                plans={k: v for k, v in state.plans.items() if k != 1})
    before = state.beliefs.n_observations
    for p in planned_runs(state, rules, 2):
        record = RunRecord(p.applied, world(p.applied, p.seed), "ok", p.seed, 2, p.role, p.slot)
        state, commands = advance(state, rules, RunFinished(record, 1.0, 1.0))
    conclusion = next(c for c in commands if isinstance(c, Conclude))
    assert conclusion.step == 2 and conclusion.decision is None
    assert state.beliefs.n_observations == before + 2 and "a" not in state.closed


def test_the_simulated_runner_hands_runs_back_in_the_order_machines_would_finish_them():
    """Two workers, runs of 3, 1 and 1 seconds (no spread): by hand, run 0 on worker 0 from 0
    to 3, run 1 on worker 1 from 0 to 1, run 2 queued until worker 1 frees, 1 to 2."""

    class Timed:
        def __init__(self, seconds):
            self.seconds = seconds

        def run(self, config, seed):
            from envs import Outcome
            return Outcome(1.0, "ok", self.seconds[seed], None, {})

    from engine.runner import PlannedRun
    runner = SimulatedRunner(2)
    plans = [PlannedRun(1, slot, "candidate", frozenset(), {}, slot) for slot in range(3)]
    runner.submit(Timed({0: 3.0, 1: 1.0, 2: 1.0}), plans)
    got = []
    while runner.busy:
        plan, outcome = runner.next_finished()
        sim = outcome.extra["simulated"]
        got.append((plan.slot, sim["worker"], sim["start"], sim["finish"]))
    assert got == [(1, 1, 0.0, 1.0), (2, 1, 1.0, 2.0), (0, 0, 0.0, 3.0)]


def with_runner(policy: str, runner: str, workers: int = 4) -> str:
    """The loop tests' synthetic study (interactions modelled) on `workers` of `runner`."""
    return (textwrap.dedent(CONFIG) + f'\n[policy]\nkind = "{policy}"\n\n[runner]\n'
            f'kind = "{runner}"\nworkers = {workers}\nspread = 0.8\n')


def decisions_and_runs(db: Path) -> dict[str, list[dict]]:
    """The ledger's plans, decisions and episodes, and its runs by (step, slot) without their
    extra (where and when each ran, which differs by runner)."""
    tables = ledger(db)
    tables["runs"] = sorted(({k: v for k, v in row.items() if k != "extra_json"}
                             for row in tables["runs"]), key=lambda r: (r["step"], r["slot"]))
    return tables


def synthetic_study(tmp_path: Path, name: str, runner: str, policy: str = "voi",
                    out: str | None = None, workers: int = 4) -> Study:
    path = tmp_path / f"{name}.toml"
    path.write_text(with_runner(policy, runner, workers))
    return Study(load_config(path, out_dir=str(tmp_path / (out or name))))


class SimulatedStopsAfter(StopsAfter, SimulatedRunner):
    pass


class WaitsForNewcomers:
    """voi, except that while steps are in flight it waits (stops) when a change nobody has run
    is open: a policy whose wait follows new proposals."""

    def __init__(self) -> None:
        self.inner = make_policy("voi", keep_rule=KeepRule(max_replicates=6))

    def select(self, view, beliefs, rng):
        newcomer = any(view.runs_per_hypothesis.get(c, 0) == 0 for c in view.candidates)
        if view.in_flight and newcomer:
            return Action("stop", None, 0, "waits for the steps in flight")
        return self.inner.select(view, beliefs, rng)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_study_stopped_after_a_wait_for_steps_in_flight_resumes_as_it_went_on():
    """A proposal arrives while steps are in flight and the policy waits: the stop is recorded
    with the proposal, and the round is over. Resumed before the next conclusion, the study
    waits for it too: the proposer is asked when it was asked live, and the plans follow."""
    rules = dataclasses.replace(rules_for("voi", workers=4), policy=WaitsForNewcomers())
    newcomer = {6: (Hypothesis("g", "knobs", {"g": 1}),)}
    EFFECTS["g"] = -0.3
    try:
        live = drive(rules, order_seed=None, state=fresh("abcd"), proposals=newcomer)
        waited = next(step for step, plan in live.plans if plan.kind == "stop")
        for finished in range(1, 40):
            stopped = drive(rules, None, fresh("abcd"), stop_after=finished, proposals=newcomer)
            if waited in stopped.state.unconcluded and max(stopped.state.plans) == waited:
                break
        else:
            pytest.fail("no stop between the recorded wait and the next conclusion")
        resumed = drive(rules, None, stopped.state, proposals=newcomer)
    finally:
        del EFFECTS["g"]
    assert stopped.asked + resumed.asked == live.asked
    assert stopped.plans + resumed.plans == live.plans
    assert stopped.conclusions + resumed.conclusions == live.conclusions


@pytest.mark.parametrize("policy", ["voi", "design"])
def test_a_study_with_steps_in_flight_is_the_same_on_any_runner_and_after_a_stop(tmp_path,
                                                                                   policy):
    simulated = synthetic_study(tmp_path, "simulated", "simulated", policy)
    assert simulated.run(write_report=False).status == "finished"
    reference = decisions_and_runs(tmp_path / "simulated" / "study.db")
    assert len(reference["runs"]) == 30
    same_state(simulated.state, synthetic_study(tmp_path, "simulated", "simulated", policy).state)
    threads = synthetic_study(tmp_path, "parallel", "parallel", policy)
    assert threads.run(write_report=False).status == "finished"
    assert decisions_and_runs(tmp_path / "parallel" / "study.db") == reference
    for limit in (5, 17):  # stopped with steps in flight, some of their runs in
        name = f"stopped{limit}"
        broken, runner = synthetic_study(tmp_path, name, "simulated", policy), \
            SimulatedStopsAfter(4, spread=0.8)
        runner.limit = limit
        stopped_then_resumed(broken, runner,
                             lambda: synthetic_study(tmp_path, name, "simulated", policy))
        assert broken.state.runs_used == limit and broken.state.unconcluded
        assert decisions_and_runs(tmp_path / name / "study.db") == reference


@pytest.mark.parametrize("workers", [1, 8])
def test_a_study_stopped_on_four_workers_resumes_on_another_fleet(tmp_path, workers):
    """[runner] is not part of the study's identity: its plans are in the ledger. Resumed on
    another number of workers, the steps in flight conclude as planned and nothing is lost or
    made twice."""
    broken, runner = synthetic_study(tmp_path, "fleet", "simulated"), SimulatedStopsAfter(4)
    runner.limit = 9
    broken.runner = runner
    assert broken.run(write_report=False).status == "stopped"
    planned = dict(broken.state.plans)
    resumed = synthetic_study(tmp_path, "fleet", "simulated", workers=workers)
    assert resumed.run(write_report=False).status == "finished"
    runs = ledger(tmp_path / "fleet" / "study.db")["runs"]
    slots = [(run["step"], run["slot"]) for run in runs]
    assert len(runs) == 30 and len(set(slots)) == 30
    plans = resumed.state.plans
    assert all(plans[step] == plan for step, plan in planned.items())
    assert set(resumed.state.concluded) == set(plans)
    assert all((step, slot) in slots for step, plan in plans.items()
               for slot in range(len(plan.runs)))


# The runner tests' sleeping run, which also leaves a mark when it starts.
MARKING = SLEEPING_EXPERIMENT.replace("time.sleep(", """from pathlib import Path
import os
(Path(__file__).parent / "started" / f"{seed}-{x}{y}-{os.getpid()}").touch()
time.sleep(""")

def cli(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.study", str(config), "--out", str(out),
                             "--quiet"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def recorded(out: Path) -> int:
    try:
        with sqlite3.connect(out / "study.db") as conn:
            return conn.execute("select count(*) from runs").fetchone()[0]
    except sqlite3.OperationalError:  # not there yet, or its schema is being written
        return 0


def test_a_study_killed_with_four_runs_in_flight_resumes_to_the_uninterrupted_ledger(tmp_path):
    script = tmp_path / "experiment.py"
    script.write_text(MARKING)
    (tmp_path / "started").mkdir()
    config = tmp_path / "study.toml"
    config.write_text(textwrap.dedent(DESIGN_CONFIG.format(python=sys.executable, script=script,
                                                           runner="parallel", workers=4)))
    whole = cli(config, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.communicate()
    starts_whole = len(list((tmp_path / "started").iterdir()))
    proc = cli(config, tmp_path / "killed")
    deadline = time.monotonic() + 120
    # past the first trials, 4 runs running: 4 more started than recorded
    while not (recorded(tmp_path / "killed") >= 6 and len(list((tmp_path / "started").iterdir()))
               - starts_whole - recorded(tmp_path / "killed") >= 4):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "never had four runs in flight"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert recorded(tmp_path / "killed") < starts_whole
    resumed = cli(config, tmp_path / "killed")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    ours = decisions_and_runs(tmp_path / "killed" / "study.db")
    theirs = decisions_and_runs(tmp_path / "whole" / "study.db")
    assert len(theirs["runs"]) == starts_whole >= 12
    assert ours == theirs


FLEET_BENCH = """
[bench]
name = "fleet"
budget_trials = 16

[defaults.study]
base_runs = 2

[[worlds]]
name = "small"
[worlds.env]
kind = "synthetic"
n_hypotheses = 4
effect_size = 1.0
noise_sd = 0.5
"""


def test_the_fleet_benchmark_times_each_study_as_its_workers_would(tmp_path, capsys):
    """experiments/bench_fleet.py on a tiny world: on one worker the budget is spent when the
    sum of the runs' simulated times has passed; on four, at no less than a quarter of it."""
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        import bench_fleet
    finally:
        sys.path.remove(str(REPO / "experiments"))
    bench = tmp_path / "fleet.toml"
    bench.write_text(textwrap.dedent(FLEET_BENCH))
    out = tmp_path / "out"
    assert bench_fleet.main([str(bench), "--seeds", "2", "--workers", "1", "4", "--jobs", "1",
                             "--out", str(out)]) == 0
    assert "| small | engine | 4 |" in capsys.readouterr().out
    curves = json.loads((out / "fleet.json").read_text())["curves"]
    for curve in (c for c in curves if c["who"] == "engine"):
        folder = out / "studies" / "small" / f"seed{curve['seed']}" / f"w{curve['workers']}"
        with sqlite3.connect(next(folder.rglob("study.db"))) as conn:
            spans = [json.loads(e)["simulated"] for (e,) in conn.execute(
                "select extra_json from runs")]
        total = sum(s["finish"] - s["start"] for s in spans)
        assert len(spans) == 16 and list(curve["times"]) == sorted(curve["times"])
        if curve["workers"] == 1:
            assert curve["makespan"] == pytest.approx(total)
        else:
            assert total / 4 - 1e-9 <= curve["makespan"] < total


@pytest.mark.parametrize("policy", POLICY_KINDS)
def test_every_term_a_policy_reports_has_a_declared_unit(policy):
    """The report plots each unit on its own axis (policies.types.TERM_UNITS)."""
    done = drive(rules_for(policy, workers=1, budget_trials=16), order_seed=None)
    terms = {key for _, plan in done.plans for key in plan.terms}
    assert terms <= set(TERM_UNITS), terms - set(TERM_UNITS)
