"""Runs in flight when the study is stopped: a signal records the finished runs and kills the
others; a SIGKILLed study's orphaned run is killed when it resumes, and nothing runs twice."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.config import load_config
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
