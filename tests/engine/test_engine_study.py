"""End-to-end studies: the real loop, real SQLite, real beliefs, real envs (synthetic, command,
gpt)."""
from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import engine.loop
from beliefs import Beliefs, Observation
from beliefs import Hypothesis as BeliefHypothesis
from engine.config import config_record, load_config, parse_config
from engine.panel import panel_seed
from engine.study import Study
from policies.types import move_members

REPO = Path(__file__).resolve().parents[2]

SYNTHETIC = """
[study]
name = "synth"
seed = 3
budget_trials = {budget}
replicates_per_step = 2
incumbent_runs_per_step = 1
base_runs = 2

[env]
kind = "synthetic"
n_hypotheses = 6
effect_size = 1.0
noise_sd = 0.5
world_seed = 1

[beliefs]
fit_pymc = {fit_pymc}
pymc_draws = 100
pymc_tune = 100
pymc_chains = 1

[policy]
kind = "{policy}"
"""

# A deterministic, slightly slow "experiment": the metric depends on the params and the seed.
FAKE_EXPERIMENT = """
import sys, time, random
args = dict(a.split("=", 1) for a in sys.argv[1:])
time.sleep(float(args.get("sleep", 0)))
if args.get("crash") == "1":
    sys.exit(3)
rng = random.Random(int(args["seed"]))
value = 5.0 - 1.5 * float(args["boost"]) + 0.2 * float(args["noise"]) + rng.gauss(0, 0.3)
print("loss:", value)
"""

COMMAND = """
[study]
name = "cmd"
seed = 5
budget_trials = {budget}
replicates_per_step = 2
incumbent_runs_per_step = 1
base_runs = 2

[env]
kind = "command"
command = "{python} {script} seed={{seed}} boost={{boost}} noise={{noise}} \
crash={{crash}} sleep={{sleep}}"
metric = "loss"
timeout_s = 20
base = {{ boost = 0, noise = 0, crash = 0, sleep = {sleep} }}

[[hypotheses]]
name = "boost"
category = "architecture"
change = {{ boost = 1 }}

[[hypotheses]]
name = "noisy"
category = "optimizer"
change = {{ noise = 1 }}

[[hypotheses]]
name = "crashes"
category = "optimizer"
change = {{ crash = 1 }}

[beliefs]
fit_pymc = false

[policy]
kind = "efe"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def command_config(tmp_path: Path, budget: int = 24, sleep: float = 0.0) -> Path:
    script = write(tmp_path / "experiment.py", FAKE_EXPERIMENT)
    return write(tmp_path / "cmd.toml", COMMAND.format(python=sys.executable, script=script,
                                                        budget=budget, sleep=sleep))


def ledger_rows(db: Path, table: str) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"select * from {table} order by rowid")]


def check_outputs_agree(out: Path) -> None:
    """Everything a study folder must hold, and the database agreeing with the exports."""
    for name in ("study.db", "beliefs.nc", "incumbent.json", "results.tsv", "report.md"):
        assert (out / name).is_file(), name
    for plot in ("effects_forest.png", "incumbent.png", "efe_terms.png", "appraisal.png",
                 "p_better.png", "runs.png"):
        assert (out / "plots" / plot).stat().st_size > 5000, plot
    decisions = ledger_rows(out / "study.db", "decisions")
    incumbent = json.loads((out / "incumbent.json").read_text())
    kept = [name for d in decisions if d["verdict"] == "keep"
            for name in sorted(move_members(d["hypothesis"]))]
    assert incumbent["kept"] == kept
    assert incumbent["interval"][0] <= incumbent["mean"] <= incumbent["interval"][1]
    with open(out / "results.tsv", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        rows = list(reader)
    config = json.loads(ledger_rows(out / "study.db", "studies")[0]["config_json"])["config"]
    metric = parse_config(config).env["metric"]
    assert reader.fieldnames[1] == metric  # the metric's column is named after it
    final = [d for d in decisions if d["verdict"] != "undecided"]
    assert rows[0]["description"].startswith("baseline")
    assert [r["status"] for r in rows[1:] if "(undecided)" not in r["description"]] == [
        "keep" if d["verdict"] == "keep" else "crash" if "crashed" in d["reason"] else "discard"
        for d in final]
    report = (out / "report.md").read_text()
    header = "| hypothesis | category | mean | interval | P(no effect) |"
    effects = report[report.index(header):].split("\n\n")[0]
    for row in effects.splitlines()[2:]:
        assert 0.0 <= float(row.strip("| ").split(" | ")[-1]) <= 1.0, row
    last_verdict = {d["hypothesis"]: d["verdict"] for d in decisions}
    assert sum("(undecided)" in r["description"] for r in rows) == \
        sum(v == "undecided" for v in last_verdict.values())
    import arviz as az  # beliefs.nc's observations are the ledger's runs, labelled, in its units

    observed = az.from_netcdf(out / "beliefs.nc").observed_data["y"]
    runs = {(r["step"], r["slot"]): r for r in ledger_rows(out / "study.db", "runs")}
    for y, step, slot, role in zip(observed.values, observed["step"].values,
                                   observed["slot"].values, observed["role"].values):
        run = runs[(int(step), int(slot))]
        assert (run["role"], run["status"]) == (role, "ok")
        assert y == pytest.approx(run["metric"], rel=1e-12)
    assert len(observed) == sum(r["status"] == "ok" for r in runs.values())


# the forest plot's legend is labelled
@pytest.mark.filterwarnings("error:No artists with labels:UserWarning")
def test_synthetic_study_end_to_end_with_pymc(tmp_path):
    cfg = load_config(write(tmp_path / "s.toml",
                            SYNTHETIC.format(budget=30, fit_pymc="true", policy="efe")),
                      out_dir=str(tmp_path / "out"))
    result = Study(cfg).run()
    assert result.status == "finished"
    assert result.runs_used <= 30
    check_outputs_agree(tmp_path / "out")
    assert (tmp_path / "out" / "beliefs_pymc.nc").is_file()
    import arviz as az

    fitted = az.from_netcdf(tmp_path / "out" / "beliefs_pymc.nc")
    divergences = int(fitted.sample_stats["diverging"].sum())
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Full-Bayes fit (PyMC, NUTS)" in report
    assert f"{divergences} divergences, no r-hat (one chain), min bulk ESS " in report
    assert ("WARNING: not trustworthy" in report) == (divergences > 0 or "r-hat up to" in report
                                                      or "bulk ESS down to" in report)
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    assert len(runs) == result.runs_used
    assert all(r["seed"] is not None and r["config_json"] and r["backend"] for r in runs)
    # run again, finished: nothing is refitted or rewritten
    written = output_times(tmp_path / "out")
    again = Study(cfg).run()
    assert (again.status, again.runs_used) == ("finished", result.runs_used)
    assert output_times(tmp_path / "out") == written


def test_the_p_better_plot_refits_the_decisions_it_shows(tmp_path):
    """The plot's P(better) after a step comes from the beliefs refitted on the runs so far: at
    the end it is the live posterior's, and at a revert (incumbent unchanged) it is the
    decision's own P(better) to rounding."""
    from engine.plots import p_better_trajectory
    from policies.keep import probability_better_than

    cfg = load_config(write(tmp_path / "s.toml",
                            SYNTHETIC.format(budget=24, fit_pymc="false", policy="efe")),
                      out_dir=str(tmp_path / "out"))
    study = Study(cfg)
    assert study.run(write_report=False).status == "finished"
    state, summary = study.state, study.summary()
    trajectory = p_better_trajectory(summary, state.beliefs)
    incumbent = state.incumbent
    for name, points in trajectory.items():
        final = probability_better_than(state.beliefs, incumbent | {name}, incumbent - {name})[0]
        assert points[-1][1] == pytest.approx(final, abs=1e-9)
    reverts = [d for d in summary.decisions if d.verdict == "revert" and " + " not in d.hypothesis]
    assert reverts
    for d in reverts:
        at = dict(trajectory[d.hypothesis])
        assert at[d.step] == pytest.approx(d.p_better, abs=1e-9)


def output_times(out: Path) -> dict[str, int]:
    """Modification time (ns) of every output the study wrote: all but its ledger and the
    folder's marker (study.json, which records the ledger's run count on every open)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(("study.db", "study.json", "."))}


def test_a_finished_study_rewrites_its_outputs_only_when_asked(tmp_path):
    cfg = load_config(write(tmp_path / "s.toml",
                            SYNTHETIC.format(budget=12, fit_pymc="false", policy="ratchet")),
                      out_dir=str(tmp_path / "out"))
    Study(cfg).run()
    written = output_times(tmp_path / "out")
    assert "report.md" in written and "results.tsv" in written
    Study(cfg).run()
    assert output_times(tmp_path / "out") == written
    rewritten = Study(cfg).run(rewrite=True)
    assert rewritten.runs_used == 12
    times = output_times(tmp_path / "out")
    assert set(times) == set(written) and all(times[k] > written[k] for k in written)


INTERACTIONS = """
[study]
name = "pairs"
seed = {seed}
budget_trials = 90
replicates_per_step = 2
incumbent_runs_per_step = 1
base_runs = 2

[env]
kind = "synthetic"
n_hypotheses = 12
noise_sd = 0.5
n_interactions = 6
world_seed = {seed}

[beliefs]
interactions = true
fit_pymc = false

[policy]
kind = "voi"
"""


SYNERGY_EXPERIMENT = """
import random, sys
args = dict(a.split("=", 1) for a in sys.argv[1:])
a, b, c = (int(args[k]) for k in "abc")
rng = random.Random(int(args["seed"]))
print("loss:", 5.0 + 0.4 * a + 0.4 * b - 2.0 * a * b + 0.3 * c + rng.gauss(0, 0.15))
"""

SYNERGY = """
[study]
name = "synergy"
seed = 2
budget_trials = 60
replicates_per_step = 2
incumbent_runs_per_step = 1
base_runs = 2

[env]
kind = "command"
command = "{python} {script} seed={{seed}} a={{a}} b={{b}} c={{c}}"
metric = "loss"
base = {{ a = 0, b = 0, c = 0 }}

[[hypotheses]]
name = "a"
change = {{ a = 1 }}

[[hypotheses]]
name = "b"
change = {{ b = 1 }}

[[hypotheses]]
name = "c"
change = {{ c = 1 }}

[beliefs]
interactions = true
fit_pymc = false

[policy]
kind = "voi"
"""


def test_a_pair_of_changes_that_fail_alone_is_tried_together_and_kept(tmp_path):
    """a and b are each 0.4 worse alone and 1.2 better together (noise 0.15); c is worse. With
    interactions modelled, both singles are reverted and the pair move a + b is kept."""
    folder = tmp_path
    script = write(folder / "synergy.py", SYNERGY_EXPERIMENT)
    config = write(folder / "synergy.toml", SYNERGY.format(python=sys.executable, script=script))
    study = Study(load_config(config, out_dir=str(folder / "out")))
    study.run(write_report=False)
    decisions = study.ledger.decisions(study.study_id)
    verdicts = {d["hypothesis"]: d["verdict"] for d in decisions if d["verdict"] != "undecided"}
    assert verdicts.get("a") == "revert" and verdicts.get("b") == "revert"
    assert verdicts.get("a + b") == "keep" and study.incumbent == frozenset({"a", "b"})
    runs = ledger_rows(folder / "out" / "study.db", "runs")
    pair_steps = {d["step"] for d in decisions if d["hypothesis"] == "a + b"}
    assert all({"a", "b"} <= set(json.loads(r["hypotheses_json"]))
               for r in runs if r["step"] in pair_steps and r["role"] == "candidate")


def test_reopened_trials_when_interactions_are_modelled(tmp_path):
    """A reverted change gets a new trial on a new incumbent (world 12 of the interactions
    family: of worlds 1-12 at numpy 2.4 and scipy 1.17 the one that reopens a change; world 8
    did at earlier versions), and a study rebuilt from its ledger sees exactly the same
    state."""
    cfg = load_config(write(tmp_path / "pairs12.toml", INTERACTIONS.format(seed=12)),
                      out_dir=str(tmp_path / "out0"))
    study = Study(cfg)
    study.run()
    check_outputs_agree(tmp_path / "out0")
    replayed = Study(cfg)
    assert ((replayed.incumbent, replayed.kept, replayed.closed)
            == (study.incumbent, study.kept, study.closed))
    assert replayed.view() == study.view()
    decisions = study.ledger.decisions(study.study_id)
    final = [d for d in decisions if d["verdict"] != "undecided"]
    # sorted: a set's order changes with the process's hash seed
    retried = sorted(name for name in {d["hypothesis"] for d in final}
                     if sum(d["hypothesis"] == name for d in final) > 1)
    assert retried, "world 12 tries a reverted change again on a new incumbent"
    # A new trial goes on from the earlier ones: the keep rule counts every candidate run of
    # the move up to its last verdict, the first trial's too.
    last = [d for d in final if d["hypothesis"] == retried[0]][-1]
    first = [d for d in final if d["hypothesis"] == retried[0]][0]
    plans = study.state.plans
    runs_of_move = sum(1 for r in study.state.runs if r.role == "candidate"
                       and plans[r.step].hypothesis == retried[0] and r.step <= last["step"])
    assert last["n_runs"] == runs_of_move > first["n_runs"]


# single runs: no overflowing leave-one-out losses
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_the_ratchet_runs_one_unpaired_run_per_step(tmp_path):
    cfg = load_config(write(tmp_path / "s.toml",
                            SYNTHETIC.format(budget=12, fit_pymc="false", policy="ratchet")),
                      out_dir=str(tmp_path / "out"))
    Study(cfg).run(write_report=False)
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    assert len(runs) == 12
    assert {r["role"] for r in runs} == {"base", "candidate"}


def test_command_study_survives_a_crashing_hypothesis(tmp_path):
    cfg = load_config(command_config(tmp_path), out_dir=str(tmp_path / "out"))
    result = Study(cfg).run()
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    crashed = [r for r in runs if r["status"] == "crash"]
    decisions = {d["hypothesis"]: d
                 for d in ledger_rows(tmp_path / "out" / "study.db", "decisions")}
    if crashed:  # the policy chose to try it: the study recorded the crash and carried on
        assert decisions["crashes"]["verdict"] == "revert"
        assert all(json.loads(r["hypotheses_json"]) for r in crashed)
        # without interactions nothing can change a crash: one trial, never reopened
        trials = [d for d in ledger_rows(tmp_path / "out" / "study.db", "decisions")
                  if d["hypothesis"] == "crashes"]
        assert len(trials) == 1 and len(crashed) == cfg.study.replicates_per_step
    assert "boost" in result.kept  # a 5-sd improvement is found and kept
    check_outputs_agree(tmp_path / "out")


def run_study_process(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.study", str(config), "--out", str(out),
                             "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_runs(db: Path, count: int, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if db.exists():
            try:
                if len(ledger_rows(db, "runs")) >= count:
                    return
            except sqlite3.OperationalError:
                pass  # the schema is being created
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} runs after {limit} s")


def run_keys(db: Path) -> list[tuple]:
    return sorted((r["step"], r["slot"], r["seed"], r["hypotheses_json"], r["role"])
                  for r in ledger_rows(db, "runs"))


def test_kill_9_mid_study_then_resume_loses_and_repeats_nothing(tmp_path):
    config = command_config(tmp_path, budget=18, sleep=0.3)
    reference = subprocess.run([sys.executable, "-m", "engine.study", str(config), "--out",
                                str(tmp_path / "reference"), "--quiet"], cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    expected = run_keys(tmp_path / "reference" / "study.db")
    assert 16 <= len(expected) <= 18  # the study stops early once every hypothesis is decided

    out = tmp_path / "killed"
    for kill_after in (3, 8, 13):  # three kills at different points, each mid-step
        proc = run_study_process(config, out)
        wait_for_runs(out / "study.db", kill_after, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run([sys.executable, "-m", "engine.study", str(config), "--out", str(out),
                            "--quiet"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    got = run_keys(out / "study.db")
    assert len(got) == len(set(got)), "a run was recorded twice"
    assert got == expected
    assert [d["verdict"] for d in ledger_rows(out / "study.db", "decisions")] == \
        [d["verdict"] for d in ledger_rows(tmp_path / "reference" / "study.db", "decisions")]


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    config = command_config(tmp_path, budget=18, sleep=0.3)
    out = tmp_path / "out"
    proc = run_study_process(config, out)
    wait_for_runs(out / "study.db", 4, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Resume with: python -m engine.study" in stderr
    assert ledger_rows(out / "study.db", "studies")[0]["status"] == "stopped"
    resumed = subprocess.run([sys.executable, "-m", "engine.study", str(config), "--out", str(out),
                              "--quiet"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    keys = run_keys(out / "study.db")
    assert 16 <= len(keys) == len(set(keys)) <= 18


def test_sigint_stops_the_study_even_when_inherited_ignored(tmp_path):
    """A script that starts the study in the background hands it SIGINT ignored; kill -INT must
    still stop it cleanly."""
    config = command_config(tmp_path, budget=18, sleep=0.3)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "engine.study", str(config), "--out", str(out),
                             "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_for_runs(out / "study.db", 3, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert ledger_rows(out / "study.db", "studies")[0]["status"] == "stopped"


def test_a_bad_config_exits_2_naming_the_key_before_any_run(tmp_path):
    config = write(tmp_path / "bad.toml",
                   SYNTHETIC.format(budget=0, fit_pymc="false", policy="efe"))
    result = subprocess.run([sys.executable, "-m", "engine.study", str(config), "--out",
                             str(tmp_path / "o")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "budget_trials" in result.stderr and "0" in result.stderr
    assert not (tmp_path / "o" / "study.db").exists()


def test_resuming_with_a_changed_config_is_refused(tmp_path):
    path = write(tmp_path / "s.toml", SYNTHETIC.format(budget=10, fit_pymc="false", policy="efe"))
    Study(load_config(path, out_dir=str(tmp_path / "out"))).run(write_report=False)
    write(path, SYNTHETIC.format(budget=10, fit_pymc="false", policy="greedy"))
    changed = r"different config \(\[policy\] kind: 'efe' -> 'greedy'\)"
    with pytest.raises(ValueError, match=changed):
        Study(load_config(path, out_dir=str(tmp_path / "out")))


def stored_config(db: Path, edit) -> None:
    """Rewrite study 1's stored config record with `edit` (as an older version wrote it)."""
    with sqlite3.connect(db) as conn:
        record = json.loads(conn.execute("select config_json from studies").fetchone()[0])
        edit(record)
        conn.execute("update studies set config_json = ?", [json.dumps(record)])


def test_a_study_made_before_a_setting_was_added_resumes(tmp_path):
    """Its stored hash was of the settings of its day, defaults filled; the file it stored is
    read again by this version, so the new setting's default is on both sides."""
    path = write(tmp_path / "s.toml", SYNTHETIC.format(budget=10, fit_pymc="false", policy="efe"))
    out = tmp_path / "out"
    Study(load_config(path, out_dir=str(out))).run(write_report=False)
    stored_config(out / "study.db", lambda record: record.update(config_hash="0" * 64))
    resumed = Study(load_config(path, out_dir=str(out)))
    assert resumed.run(write_report=False).status == "finished"
    assert resumed.ledger.study(resumed.study_id)["config"] == config_record(resumed.cfg)


def test_the_shared_memory_resumes_a_study_as_its_folder_does(tmp_path):
    """With [memory] path, the long-term memory's copy of the study is compared the same way:
    made before a setting was added, and resumed on another fleet, it resumes."""
    memory = tmp_path / "memory.db"
    text = SYNTHETIC.format(budget=10, fit_pymc="false", policy="efe") + \
        f'\n[memory]\npath = "{memory}"\n'
    path, out = write(tmp_path / "s.toml", text), tmp_path / "out"
    Study(load_config(path, out_dir=str(out))).run(write_report=False)
    for db in (out / "study.db", memory):
        stored_config(db, lambda record: record.update(config_hash="0" * 64))
    write(path, text + '\n[runner]\nkind = "simulated"\nworkers = 3\n')
    resumed = Study(load_config(path, out_dir=str(out)))
    assert resumed.run(write_report=False).status == "finished"
    assert resumed.shared_memory.study(resumed.shared_study_id)["config"] == \
        config_record(resumed.cfg)


def test_a_stored_config_this_version_refuses_is_a_different_config(tmp_path):
    path = write(tmp_path / "s.toml", SYNTHETIC.format(budget=10, fit_pymc="false", policy="efe"))
    out = tmp_path / "out"
    Study(load_config(path, out_dir=str(out))).run(write_report=False)
    stored_config(out / "study.db",
                  lambda record: record["config"]["study"].update(retired_setting=1))
    with pytest.raises(ValueError, match="refused by this version.*retired_setting"):
        Study(load_config(path, out_dir=str(out)))


LLM_REPLY = json.dumps([
    {"name": "llm-wider", "category": "architecture", "change": {"boost": 1},
     "description": "from the model"},
    {"name": "bad name!", "category": "x", "change": {"boost": 1}},
])


# A proposal of a knob the command does not take ran, once, as a silent copy of the base.
UNKNOWN_KNOB_REPLY = json.dumps([
    {"name": "llm-lr", "category": "optimizer", "change": {"learning_rate": 0.1}},
    {"name": "llm-wider", "category": "architecture", "change": {"boost": 1}},
])


@pytest.mark.parametrize("reply, added",
                         [(LLM_REPLY, ["llm-wider"]), ("I think you should try RoPE", []),
                          (UNKNOWN_KNOB_REPLY, ["llm-wider"])])
def test_llm_proposer_adds_valid_hypotheses_and_survives_garbage(tmp_path, reply, added):
    path = command_config(tmp_path, budget=10)
    text = path.read_text().replace('[policy]', f'[proposer]\nkind = "llm"\nmodel = "gpt-4o-mini"\n'
                                               f'every = 1\nmock_response = {json.dumps(reply)}\n'
                                               '\n[policy]')
    path.write_text(text)
    study = Study(load_config(path, out_dir=str(tmp_path / "out")))
    result = study.run(write_report=False)
    assert result.status == "finished"
    assert [h for h in study.hypotheses if h.startswith("llm-")] == added
    steps = ledger_rows(tmp_path / "out" / "study.db", "steps")
    proposed = [h["name"] for s in steps for h in json.loads(s["action_json"]).get("proposed", [])]
    assert proposed == added


def test_proposals_made_when_the_policy_stops_are_kept(tmp_path):
    """With runs costing far more than any improvement is worth, the policy stops right after
    the first proposal: the proposed hypothesis is still in the ledger and comes back on resume."""
    path = command_config(tmp_path, budget=10)
    text = path.read_text().replace('[policy]', f'[proposer]\nkind = "llm"\nmodel = "gpt-4o-mini"\n'
                                               'every = 1\n'
                                               f'mock_response = {json.dumps(LLM_REPLY)}\n'
                                               '\n[policy]')
    path.write_text(text.replace('[policy]', '[policy]\ncost_weight = 1000000.0', 1))
    cfg = load_config(path, out_dir=str(tmp_path / "out"))
    result = Study(cfg).run(write_report=False)
    assert "justifies its cost" in result.stop_reason
    steps = ledger_rows(tmp_path / "out" / "study.db", "steps")
    stop = json.loads(steps[-1]["action_json"])
    assert stop["kind"] == "stop" and [h["name"] for h in stop["proposed"]] == ["llm-wider"]
    assert "llm-wider" in Study(cfg).hypotheses


TINY_GPT = """
[study]
name = "tiny-gpt"
seed = 1
budget_trials = 5
replicates_per_step = 2
base_runs = 2

[env]
kind = "gpt"
backend = "cpu"
steps = 3
timeout_s = 120
base = {{ n_layer = 1, n_embd = 32, n_head = 2, seq_len = 32, batch_size = 2, \
eval_seq_len = 32, eval_tokens = 1024, threads = 1 }}

[[hypotheses]]
name = "wider"
category = "architecture"
change = {{ n_embd = 48 }}

[[hypotheses]]
name = "hot-lr"
category = "optimizer"
change = {{ matrix_lr = 0.08 }}

[beliefs]
fit_pymc = {fit_pymc}
"""


def test_tiny_gpt_study_end_to_end(tmp_path):
    """The real trainer in subprocesses: every run records its eval hash, seed and config."""
    cfg = load_config(write(tmp_path / "g.toml", TINY_GPT.format(fit_pymc="false")),
                      out_dir=str(tmp_path / "out"))
    result = Study(cfg).run()
    assert result.runs_used == 5
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    assert [r["status"] for r in runs] == ["ok"] * 5, [
        json.loads(r["extra_json"]).get("reason") for r in runs]
    assert len({r["eval_hash"] for r in runs}) == 1 and runs[0]["eval_hash"]
    assert all(2.0 < r["metric"] < 9.0 for r in runs)  # bits per byte of an almost untrained model
    candidate = [json.loads(r["config_json"]) for r in runs if r["role"] == "candidate"]
    assert candidate and all(c["n_layer"] == 1 for c in candidate)
    check_outputs_agree(tmp_path / "out")


@pytest.mark.parametrize("adaptive", [True, False])
def test_incumbent_runs_are_paired_only_where_they_narrow_the_comparison(tmp_path, adaptive):
    """Each run step records its incumbent runs in the plan and runs exactly those, only at the
    candidate's seeds the incumbent has no run at. Adaptive: one incumbent run exactly when it
    narrows Var(mu_cand - mu_inc) at least as much as one more candidate run would (recomputed
    here from the beliefs before the step, at the seeds each would run at); otherwise at every
    step where the incumbent lacks a seed."""
    text = SYNTHETIC.format(budget=40, fit_pymc="false", policy="efe").replace(
        "base_runs = 2", f"base_runs = 1\nadaptive_incumbent_runs = {str(adaptive).lower()}")
    cfg = load_config(write(tmp_path / "s.toml", text), out_dir=str(tmp_path / "out"))
    study = Study(cfg)
    study.run(write_report=False)
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    steps = ledger_rows(tmp_path / "out" / "study.db", "steps")
    paired = []
    for row in steps:
        action = json.loads(row["action_json"])
        if action["kind"] != "run":
            continue
        earlier = [r for r in runs if r["step"] < row["step"]]
        step_runs = [r for r in runs if r["step"] == row["step"]]
        incumbent = frozenset(r for r in json.loads(step_runs[0]["hypotheses_json"])
                              if r != action["hypothesis"])
        candidate = incumbent | {action["hypothesis"]}
        seeds_of = {}
        for r in earlier:
            seeds_of.setdefault(frozenset(json.loads(r["hypotheses_json"])), set()).add(r["seed"])
        candidate_seeds = [r["seed"] for r in step_runs if r["role"] == "candidate"]
        missing = [s for s in candidate_seeds if s not in seeds_of.get(incumbent, set())]
        assert not set(candidate_seeds) & seeds_of.get(candidate, set())  # no seed twice
        assert [r["seed"] for r in step_runs if r["role"] == "incumbent"] == \
            missing[:action["incumbent_runs"]]
        assert sum(r["role"] == "candidate" for r in step_runs) == action["n_runs"]
        paired.append(action["incumbent_runs"])
        # the beliefs before this step: every run of an earlier step
        before = Beliefs([BeliefHypothesis(h.name, h.category) for h in study.hypotheses.values()],
                         interactions=cfg.beliefs.interactions,
                         seed_effects=cfg.beliefs.seed_effects, prior=study._prior())
        before.update([Observation(frozenset(json.loads(r["hypotheses_json"])), r["metric"],
                                   seed=r["seed"]) for r in earlier if r["status"] == "ok"])
        n = action["n_runs"]
        # one more candidate run would go to the next panel seed it has not run at
        used = seeds_of.get(candidate, set()) | set(candidate_seeds)
        extra = next(s for s in (panel_seed(cfg.study, i) for i in range(10**4)) if s not in used)
        worth_it = bool(missing) and (
            before.difference_variance_after(candidate, incumbent, (n, 1),
                                             seeds=(candidate_seeds, missing[:1]))
            <= before.difference_variance_after(candidate, incumbent, (n + 1, 0),
                                                seeds=([*candidate_seeds, extra], [])))
        left = cfg.study.budget_trials - len(earlier) - n
        assert action["incumbent_runs"] == (min(1, len(missing), left) if not adaptive
                                            else min(int(worth_it), left))
    assert 0 in paired and 1 in paired  # both happen in this study
def test_hypotheses_that_set_the_same_key_never_run_together(tmp_path):
    """boost = 1 and boost = 2 are alternatives: merged, the later would win while the ledger
    named both. Once one is kept, the other is closed to trial, and every run's config is
    what its named hypotheses set."""
    path = command_config(tmp_path, budget=30)
    path.write_text(path.read_text().replace('[beliefs]', textwrap.dedent('''
        [[hypotheses]]
        name = "boost_more"
        category = "architecture"
        change = { boost = 2 }

        [beliefs]'''), 1))
    study = Study(load_config(path, out_dir=str(tmp_path / "out")))
    study.run(write_report=False)
    assert {"boost", "boost_more"} & set(study.kept)
    runs = study.ledger.runs(study.study_id)
    assert not any({"boost", "boost_more"} <= set(r["hypotheses"]) for r in runs)
    for run in runs:
        assert run["config"] == study.config_for(frozenset(run["hypotheses"]))


def test_every_run_records_when_it_started_and_finished(tmp_path):
    """The ledger's times bracket each run as it really ran: inside the study's wall-clock span,
    at least the experiment's sleep apart and near the seconds the env measured, finishing in
    recording order; and for a synthetic env, whose seconds are simulated, inside the span too."""
    from datetime import datetime

    def times(db):
        runs = sorted(ledger_rows(db, "runs"), key=lambda r: r["id"])
        return runs, [(datetime.fromisoformat(r["started"]).timestamp(),
                       datetime.fromisoformat(r["finished"]).timestamp()) for r in runs]

    before = time.time()
    cfg = load_config(command_config(tmp_path, budget=6, sleep=0.2),
                      out_dir=str(tmp_path / "out"))
    Study(cfg).run(write_report=False)
    after = time.time()
    runs, spans = times(tmp_path / "out" / "study.db")
    assert len(runs) == 6
    for run, (started, finished) in zip(runs, spans):
        assert before <= started <= finished <= after
        assert finished - started >= 0.2  # the experiment sleeps that long
        assert finished - started == pytest.approx(run["seconds"], abs=0.1)
    assert [f for _, f in spans] == sorted(f for _, f in spans)
    assert all(s >= f for (s, _), (_, f) in zip(spans[1:], spans))  # one after another
    before = time.time()
    synthetic = load_config(write(tmp_path / "s.toml",
                                  SYNTHETIC.format(budget=6, fit_pymc="false", policy="ratchet")),
                            out_dir=str(tmp_path / "synthetic"))
    Study(synthetic).run(write_report=False)
    _, spans = times(tmp_path / "synthetic" / "study.db")
    assert all(before <= started <= finished <= time.time() for started, finished in spans)


def test_off_a_terminal_the_cli_prints_one_plain_line_per_step(tmp_path):
    """Piped (as `make study | tee log` would), the CLI still reports: one line per concluded
    step, none of the terminal-only lines announcing a step before its runs."""
    config = write(tmp_path / "s.toml",
                   SYNTHETIC.format(budget=12, fit_pymc="false", policy="ratchet"))
    done = subprocess.run([sys.executable, "-m", "engine.study", str(config), "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    step_lines = [line for line in done.stderr.splitlines() if line.startswith("[")]
    steps = ledger_rows(tmp_path / "out" / "study.db", "steps")
    assert len(step_lines) == len(steps) > 0
    assert not any(line.startswith("…") for line in done.stderr.splitlines())


def test_a_study_leaves_the_process_as_it_found_it_and_runs_off_the_main_thread(tmp_path):
    """The BLAS thread count and the signal handlers are the caller's again after a study, and
    a study run on a worker thread (where no handler can be installed) finishes."""
    import threading

    from threadpoolctl import threadpool_info

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads_before = blas_threads()
    cfg = load_config(write(tmp_path / "s.toml",
                            SYNTHETIC.format(budget=12, fit_pymc="false", policy="ratchet")),
                      out_dir=str(tmp_path / "out"))
    results, opened = [], []

    def open_and_run():
        study = Study(cfg)  # on this thread: its ledger's connection belongs to it
        opened.append(blas_threads())
        results.append(study.run(write_report=False))

    worker = threading.Thread(target=open_and_run)
    worker.start()
    worker.join(timeout=300)
    assert opened == [threads_before]  # opening a study changes nothing
    assert results and results[0].status == "finished" and results[0].runs_used == 12
    assert blas_threads() == threads_before
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    # on the main thread, a Study run from Python installs no handler either (only the CLI does)
    seen = []
    real_start_runs = engine.loop.start_runs

    def start_runs_noting_handlers(*args, **kwargs):
        seen.append({sig: signal.getsignal(sig) for sig in handlers})
        return real_start_runs(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine.loop, "start_runs", start_runs_noting_handlers)
        assert Study(load_config(cfg.source_path, out_dir=str(tmp_path / "main"))).run(
            write_report=False).runs_used == 12
    assert seen and all(during == handlers for during in seen)


def test_the_engine_console_script_runs_a_study_without_the_venv_active(tmp_path):
    """`.venv/bin/engine study CONFIG` with a PATH that holds no virtualenv: what
    `python -m engine.study` needs an activated venv for."""
    script = Path(sys.executable).parent / "engine"
    config = write(tmp_path / "s.toml",
                   SYNTHETIC.format(budget=6, fit_pymc="false", policy="ratchet"))
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([str(script), "study", str(config), "--out", str(tmp_path / "out"),
                           "--quiet"], cwd=tmp_path, env=bare, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Stopped:" in done.stderr and len(ledger_rows(tmp_path / "out" / "study.db",
                                                         "runs")) == 6
    unknown = subprocess.run([str(script), "studdy"], env=bare, capture_output=True, text=True,
                             timeout=60)
    assert unknown.returncode == 2 and "usage: engine {study,show,bench}" in unknown.stderr


def test_the_command_demo_runs_as_shipped(tmp_path):
    """experiments/demo_command: its script and config work together (a shorter budget here),
    every run reports its loss, and the change that hurts is never kept."""
    demo = REPO / "experiments" / "demo_command"
    text = (demo / "study.toml").read_text().replace("budget_trials = 40", "budget_trials = 14")
    config = write(tmp_path / "demo.toml", text.replace('cwd = "."', f'cwd = "{demo}"'))
    study = Study(load_config(config, out_dir=str(tmp_path / "out")))
    result = study.run(write_report=False)
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    assert result.runs_used == len(runs) == 14
    assert all(r["status"] == "ok" for r in runs)
    assert "more_dropout" not in result.kept


def test_the_synthetic_demo_prints_what_each_policy_kept_as_its_own_study_does(tmp_path, capsys):
    """experiments/demo_synthetic.py: its design row is what the config run as a study keeps,
    and every kept change is printed with the world's true effect."""
    import importlib.util

    from envs.synthetic import SyntheticEnv

    spec = importlib.util.spec_from_file_location("demo_synthetic",
                                                  REPO / "experiments" / "demo_synthetic.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(["--seeds", "1"]) == 0
    printed = capsys.readouterr().out
    study = Study(load_config(demo.CONFIG, out_dir=str(tmp_path / "own")))
    study.run(write_report=False)
    effects = study.env.true_effects()
    assert isinstance(study.env, SyntheticEnv)
    row = next(line for line in printed.splitlines() if line.startswith("design "))
    assert row.split("  ")[-1].strip() == (", ".join(f"{n} ({effects[n]:+.3f})"
                                                     for n in study.kept) or "nothing")
    assert "ratchet" in printed and "Over worlds 1..1" in printed
