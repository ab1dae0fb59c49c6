"""Runs in flight when the study is stopped: a signal records the finished runs and kills the
others; a SIGKILLed study's orphaned run is killed when it resumes, and nothing runs twice."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config
from engine.study import Study
from tests.processes import is_running

REPO = Path(__file__).resolve().parents[2]

# The candidate (x = 1) hangs when started with BLOCK set; every run leaves its pid behind.
EXPERIMENT = """
import os, random, sys, time
from pathlib import Path
seed, x = int(sys.argv[1]), int(sys.argv[2])
(Path(__file__).parent / "pids" / f"{seed}-{x}-{os.getpid()}").touch()
while x == 1 and os.environ.get("BLOCK"):
    time.sleep(0.05)
print("loss:", 5.0 - x + random.Random(seed).gauss(0, 0.3))
"""

CONFIG = """
[study]
name = "inflight"
seed = 3
budget_trials = 8
base_runs = 1  # so step 1's second candidate seed lacks an incumbent run, which it then gets
replicates_per_step = 2
incumbent_runs_per_step = 1
adaptive_incumbent_runs = false

[env]
kind = "command"
command = "{python} {script} {{seed}} {{x}}"
metric = "loss"
timeout_s = 60
base = {{ x = 0 }}

[[hypotheses]]
name = "better"
change = {{ x = 1 }}

[beliefs]
fit_pymc = false

[policy]
kind = "voi"  # trial steps: candidate runs paired with incumbent runs

[runner]
kind = "{runner}"
workers = 3
"""


def folder(tmp_path: Path, runner: str) -> Path:
    script = tmp_path / "experiment.py"
    script.write_text(EXPERIMENT)
    (tmp_path / "pids").mkdir()
    config = tmp_path / "study.toml"
    config.write_text(textwrap.dedent(CONFIG.format(python=sys.executable, script=script,
                                                    runner=runner)))
    return config


def start(config: Path, out: Path) -> subprocess.Popen:
    """The study in a process of its own whose candidate runs hang."""
    return subprocess.Popen([sys.executable, "-m", "engine.study", str(config), "--out", str(out),
                             "--quiet"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "BLOCK": "1"})


def runs(out: Path) -> list[tuple[int, int, str]]:
    if not (out / "study.db").exists():
        return []
    try:
        with sqlite3.connect(out / "study.db") as conn:
            return conn.execute("select step, slot, role from runs order by step, slot").fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return []


def candidate_pids(tmp_path: Path) -> list[int]:
    return [int(p.name.split("-")[2]) for p in (tmp_path / "pids").iterdir()
            if p.name.split("-")[1] == "1"]


def wait_until(condition, proc: subprocess.Popen | None = None, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_a_signal_records_the_finished_parallel_runs_and_kills_the_rest(tmp_path):
    config, out = folder(tmp_path, "parallel"), tmp_path / "out"
    proc = start(config, out)
    # base runs (step 0), then step 1: two slow candidates and one quick incumbent at once
    wait_until(lambda: (1, 2, "incumbent") in runs(out) and len(candidate_pids(tmp_path)) == 2,
               proc)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - signalled < 20  # it did not wait for the candidates to finish
    assert runs(out) == [(0, 0, "base"), (1, 2, "incumbent")]
    assert not any(is_running(pid) for pid in candidate_pids(tmp_path))
    study = Study(load_config(config, out_dir=str(out)))
    assert study.run(write_report=False).status == "finished"
    final = runs(out)
    assert len(final) == len(set((step, slot) for step, slot, _ in final))
    assert [(s, slot) for s, slot, _ in final if s == 1] == [(1, 0), (1, 1), (1, 2)]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="the orphan sweep reads /proc")
def test_the_run_a_sigkilled_study_left_running_is_killed_on_resume(tmp_path, capsys):
    config, out = folder(tmp_path, "local"), tmp_path / "out"
    proc = start(config, out)
    wait_until(lambda: len(candidate_pids(tmp_path)) == 1, proc)
    proc.kill()
    proc.communicate(timeout=30)
    orphan = candidate_pids(tmp_path)[0]
    assert is_running(orphan)  # SIGKILL gives the study no chance to stop its child
    study = Study(load_config(config, out_dir=str(out)))  # its own runs do not hang
    try:
        assert study.run(write_report=False).status == "finished"
        assert not is_running(orphan)
        assert "killed 1 process(es) left running" in capsys.readouterr().err
    finally:
        if is_running(orphan):
            os.kill(orphan, signal.SIGKILL)
    final = runs(out)
    assert len(final) == len(set((step, slot) for step, slot, _ in final))


# Each run writes the CUDA_VISIBLE_DEVICES it saw to a file named by its seed and x, which
# identify it: a configuration runs at a seed once.
DEVICE_EXPERIMENT = """
import os, random, sys, time
from pathlib import Path
seed, x = int(sys.argv[1]), int(sys.argv[2])
(Path(__file__).parent / "seen" / f"{seed}-{x}").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
time.sleep(0.2)
print("loss:", 5.0 - x + random.Random(seed).gauss(0, 0.3))
"""


# A second kind of hardware, by the device the run was given: reads 1.0 higher and is three
# times as noisy.
TWO_KINDS_EXPERIMENT = """
import os, random, sys, time
seed, x = int(sys.argv[1]), int(sys.argv[2])
other = os.environ["CUDA_VISIBLE_DEVICES"] == "1"
time.sleep(0.1)
print("loss:", 5.0 - 0.3 * x + other + random.Random(seed).gauss(0, 0.3 if other else 0.1))
"""


def test_runs_on_two_devices_are_pooled_with_an_offset_and_a_noise_multiplier(tmp_path):
    """Each run's device reaches the model from its ledger row: the second device's fitted
    offset is its true 1.0 (against the reference device, whichever ran first) within four
    standard errors of a device mean over its runs (0.3 / sqrt(n)), and it is found the noisier
    (its h is not checked against the true 9: the noise is drawn from the run's seed, so it is
    luck shared across the devices, which the model reads partly as the seeds');
    a replay from the ledger is the same model."""
    script = tmp_path / "experiment.py"
    script.write_text(TWO_KINDS_EXPERIMENT)
    text = textwrap.dedent(CONFIG.format(python=sys.executable, script=script,
                                         runner="parallel"))
    text = text.replace("workers = 3", 'devices = ["cuda:0", "cuda:1"]').replace(
        "budget_trials = 8", "budget_trials = 24")
    (tmp_path / "study.toml").write_text(text)
    study = Study(load_config(tmp_path / "study.toml", out_dir=str(tmp_path / "out")))
    assert study.run(write_report=False).status == "finished"
    assert {run.device for run in study.state.runs} == {"cuda:0", "cuda:1"}
    summary = study.state.beliefs.device_effects_summary()
    reference, other = list(summary)
    sign = 1.0 if other == "cuda:1" else -1.0
    on_other = sum(run.device == "cuda:1" for run in study.state.runs)
    assert abs(summary[other]["offset"] - sign * 1.0) < 4 * 0.3 / on_other**0.5
    noisier = max(summary, key=lambda device: summary[device]["noise_multiplier"])
    assert noisier == "cuda:1"
    replayed = Study(load_config(tmp_path / "study.toml", out_dir=str(tmp_path / "out")))
    assert replayed.state.beliefs.device_effects_summary() == summary


def test_a_study_made_before_device_effects_resumes_without_them(tmp_path):
    """An older version wrote no settings into the config record, and modelled no devices: its
    study resumes, and goes on resuming, with the model it was made with, not today's
    default."""
    script = tmp_path / "experiment.py"
    script.write_text(TWO_KINDS_EXPERIMENT)
    text = textwrap.dedent(CONFIG.format(python=sys.executable, script=script,
                                         runner="parallel"))
    text = text.replace("workers = 3", 'devices = ["cuda:0", "cuda:1"]')
    (tmp_path / "study.toml").write_text(text)
    out = str(tmp_path / "out")
    made = Study(load_config(tmp_path / "study.toml", out_dir=out))
    assert made.run(write_report=False).status == "finished"
    assert len(made.state.beliefs.device_effects_summary()) == 2
    with sqlite3.connect(tmp_path / "out" / "study.db") as conn:
        record = json.loads(conn.execute("select config_json from studies").fetchone()[0])
        del record["settings"]  # as an older version wrote it
        conn.execute("update studies set config_json = ?", [json.dumps(record)])
    for _ in range(2):
        resumed = Study(load_config(tmp_path / "study.toml", out_dir=out))
        assert resumed.cfg.beliefs.device_effects is False
        assert resumed.state.beliefs.device_effects_summary() == {}
        assert resumed.ledger.study(resumed.study_id)["config"]["settings"]["beliefs"][
            "device_effects"] is False


def test_parallel_runs_each_see_only_their_device_and_never_share_it(tmp_path):
    script = tmp_path / "experiment.py"
    script.write_text(DEVICE_EXPERIMENT)
    (tmp_path / "seen").mkdir()
    text = textwrap.dedent(CONFIG.format(python=sys.executable, script=script,
                                         runner="parallel"))
    text = text.replace("workers = 3", 'devices = ["cuda:0", "cuda:1"]')
    (tmp_path / "study.toml").write_text(text)
    study = Study(load_config(tmp_path / "study.toml", out_dir=str(tmp_path / "out")))
    assert study.runner.workers == 2
    assert study.run(write_report=False).status == "finished"
    with sqlite3.connect(tmp_path / "out" / "study.db") as conn:
        rows = conn.execute("select seed, config_json, extra_json, started, finished "
                            "from runs").fetchall()
    assert len(rows) == study.runs_used >= 6
    by_device: dict[str, list[tuple[float, float]]] = {}
    for seed, config, extra, started, finished in rows:
        device = json.loads(extra)["device"]
        seen = (tmp_path / "seen" / f"{seed}-{json.loads(config)['x']}").read_text()
        assert seen == device.removeprefix("cuda:")
        by_device.setdefault(device, []).append((started, finished))
    assert set(by_device) == {"cuda:0", "cuda:1"}
    for spans in by_device.values():  # one run at a time on each device
        spans.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


SYNTHETIC = """
[study]
name = "lost"
seed = 2
budget_trials = 12
replicates_per_step = 2
incumbent_runs_per_step = 1
base_runs = 2

[env]
kind = "synthetic"
n_hypotheses = 3
world_seed = 1

[beliefs]
fit_pymc = false

[runner]
kind = "{runner}"
"""


def synthetic_study(tmp_path: Path, runner: str, name: str = "") -> Study:
    name = name or runner
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(SYNTHETIC.format(runner=runner)))
    return Study(load_config(path, out_dir=str(tmp_path / name)))


def test_a_run_whose_worker_raises_is_made_again_and_the_study_is_unchanged(tmp_path, capsys):
    """The env raising (not returning a failed outcome) is a lost run, as a dead worker is: made
    again, so the ledger is that of a study where nothing failed, bar the record of the loss."""
    broken = synthetic_study(tmp_path, "parallel")
    honest_run, calls, lock = broken.env.run, [], threading.Lock()

    def fails_on_the_fourth_call(config, seed):
        with lock:
            calls.append(seed)
            if len(calls) == 4:
                raise OSError("fork failed")
        return honest_run(config, seed)

    broken.env.run = fails_on_the_fourth_call
    assert broken.run(write_report=False).status == "finished"
    clean = synthetic_study(tmp_path, "parallel", "clean")
    assert clean.run(write_report=False).status == "finished"

    def ledger_of(name):
        with sqlite3.connect(tmp_path / name / "study.db") as conn:
            return conn.execute("select step, slot, role, seed, metric, status, extra_json "
                                "from runs order by step, slot").fetchall()

    ours, theirs = ledger_of("parallel"), ledger_of("clean")
    assert [row[:6] for row in ours] == [row[:6] for row in theirs]
    lost = [json.loads(row[6]).get("lost") for row in ours]
    assert [entry for entry in lost if entry] == [["OSError: fork failed"]]
    assert len(calls) == len(ours) + 1
    assert "made again after its worker failed (OSError: fork failed)" in capsys.readouterr().err


@pytest.mark.parametrize("runner, problem", [
    ('kind = "local"\ndevices = ["cuda:0"]', "expected [] unless kind = 'parallel'"),
    ('kind = "parallel"\ndevices = ["gpu0"]', '"cpu" or "cuda:N" slots, none twice'),
    ('kind = "parallel"\ndevices = ["cuda:0", "cuda:0"]', "none twice"),
    ('kind = "ray"\ncpus_per_run = -1', "cpus_per_run"),
])
def test_bad_runner_settings_are_refused_up_front(tmp_path, runner, problem):
    text = textwrap.dedent(SYNTHETIC.format(runner="local")).replace('kind = "local"', runner)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(path, out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# Each run sleeps, as a training run takes its time; its metric is still the seed's and x's.
SLEEPING_EXPERIMENT = """
import random, sys, time
seed, x, y = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
time.sleep(0.4)
print("loss:", 5.0 - x - 0.5 * y + random.Random(seed).gauss(0, 0.3))
"""

DESIGN_CONFIG = """
[study]
name = "speed"
seed = 4
budget_trials = 20
base_runs = 4

[env]
kind = "command"
command = "{python} {script} {{seed}} {{x}} {{y}}"
metric = "loss"
timeout_s = 60
base = {{ x = 0, y = 0 }}

[[hypotheses]]
name = "x"
change = {{ x = 1 }}

[[hypotheses]]
name = "y"
change = {{ y = 1 }}

[beliefs]
fit_pymc = false

[policy]
kind = "design"
block_runs = 8

[runner]
kind = "{runner}"
workers = {workers}
"""


def test_parallel_slots_shorten_a_study_of_sleeping_runs_and_record_each_run_once(tmp_path):
    """The same study on 1, 2 and 4 slots, side by side, each run once, in a fraction of the
    wall time per run: the runs of a design block at once, and the steps planned while others
    are in flight (engine.core), so that a short confirmation step overlaps a block. With
    steps in flight the plans differ by worker count (so may the number of runs a study needs
    before it has decided everything): the time is compared per run made."""
    script = tmp_path / "experiment.py"
    script.write_text(SLEEPING_EXPERIMENT)
    seconds, ledgers, used = {}, {}, {}
    for runner, workers in (("local", 1), ("parallel", 2), ("parallel", 4)):
        name = f"{runner}{workers}"
        path = tmp_path / f"{name}.toml"
        path.write_text(textwrap.dedent(DESIGN_CONFIG.format(
            python=sys.executable, script=script, runner=runner, workers=workers)))
        study = Study(load_config(path, out_dir=str(tmp_path / name)))
        started = time.monotonic()
        assert study.run(write_report=False).status == "finished"
        seconds[workers] = time.monotonic() - started
        used[workers] = study.runs_used
        with sqlite3.connect(tmp_path / name / "study.db") as conn:
            ledgers[workers] = conn.execute("select step, slot, role, hypotheses_json, seed, "
                                            "metric from runs order by step, slot").fetchall()
    for workers, rows in ledgers.items():  # every run once, no configuration twice at a seed
        assert len(rows) == used[workers] == len({(r[0], r[1]) for r in rows})
        assert len(rows) == len({r[3:5] for r in rows}) >= 12
    per_run = {workers: seconds[workers] / used[workers] for workers in seconds}
    print(f"wall seconds by slots: {seconds}, runs: {used}, seconds per run: {per_run}")
    assert per_run[2] <= 0.6 * per_run[1], per_run
    assert per_run[4] <= 0.4 * per_run[1], per_run
