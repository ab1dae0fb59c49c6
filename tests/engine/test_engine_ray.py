"""The ray runner on a real Ray instance: a study started by the runner, a Ray worker killed
mid-run, and a cluster started beforehand that the runner joins."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.config import load_config
from engine.study import Study
from tests.engine.test_engine_runner import CONFIG, SYNTHETIC

ray = pytest.importorskip("ray")


# The first run of the candidate (x = 1) kills the Ray worker that started it: a worker that
# dies mid-run. Every run also records that it started.
EXPERIMENT = """
import os, random, signal, sys, time
from pathlib import Path
seed, x = int(sys.argv[1]), int(sys.argv[2])
here = Path(__file__).parent
with open(here / "started.txt", "a") as log:
    log.write(f"{seed} {x}\\n")
marker = here / "killed"
if x == 1 and not marker.exists():
    marker.touch()
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(2)
print("loss:", 5.0 - x + random.Random(seed).gauss(0, 0.3))
"""


def synthetic(runner: str, extra: str = "") -> str:
    """The runner tests' synthetic study, on `runner`, with `extra` [runner] lines."""
    return textwrap.dedent(SYNTHETIC.format(runner=runner)) + extra + "\n"


def killing(script: Path) -> str:
    """The runner tests' command study on Ray, its run script `script`, each loss made again
    once."""
    text = textwrap.dedent(CONFIG.format(python=sys.executable, script=script, runner="ray"))
    return text.replace("workers = 3", "workers = 2\nlost_retries = 1")


@pytest.fixture(autouse=True)
def no_ray_left():
    """Each test starts with no Ray client and leaves none (a joined cluster is left running
    by the runner, as it must be; the test that starts one stops it)."""
    ray.shutdown()
    yield
    ray.shutdown()


def study_of(tmp_path: Path, name: str, text: str) -> Study:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return Study(load_config(path, out_dir=str(tmp_path / name)))


def ledger_runs(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "study.db") as conn:
        return conn.execute("select step, slot, role, hypotheses_json, seed, metric, status "
                            "from runs order by step, slot").fetchall()


def decisions(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "study.db") as conn:
        return conn.execute("select step, hypothesis, verdict, p_better from decisions "
                            "order by step").fetchall()


def test_a_study_on_a_local_ray_instance_matches_the_same_study_on_simulated_workers(tmp_path):
    """Two workers each: the same steps in flight, so the same ledger, however Ray times them."""
    on_ray = study_of(tmp_path, "on_ray", synthetic("ray"))
    assert on_ray.run(write_report=False).status == "finished"
    assert not ray.is_initialized()  # the instance the runner started is shut down with it
    local = study_of(tmp_path, "local", synthetic("simulated"))
    assert local.run(write_report=False).status == "finished"
    assert ledger_runs(tmp_path / "on_ray") == ledger_runs(tmp_path / "local")
    assert len(ledger_runs(tmp_path / "on_ray")) == on_ray.runs_used >= 8
    assert decisions(tmp_path / "on_ray") == decisions(tmp_path / "local")
    with sqlite3.connect(tmp_path / "on_ray" / "study.db") as conn:
        extras = [json.loads(e) for (e,) in conn.execute("select extra_json from runs")]
    nodes = {e["node"] for e in extras}
    assert len(nodes) == 1  # the one node's id (hex), on every run
    assert re.fullmatch(r"[0-9a-f]{16,}", nodes.pop())
    assert all(e["gpus"] == [] for e in extras)  # gpus_per_run = 0: Ray gave none


def test_stopped_the_ray_runner_hands_back_the_finished_runs_and_cancels_the_rest(tmp_path):
    """As the parallel runner does on a signal: a run that had finished is recorded, not made
    again on resume; one still running (x = 1 sleeps) is cancelled."""
    from engine.ray_runner import RayRunner
    from engine.runner import PlannedRun
    from envs import make_env

    script = tmp_path / "experiment.py"
    script.write_text("import sys, time\nx = int(sys.argv[2])\ntime.sleep(60 * x)\n"
                      "print('loss:', 1.0 + x)\n")
    env = make_env({"kind": "command", "command": f"{sys.executable} {script} {{seed}} {{x}}",
                    "metric": "loss", "timeout_s": 120, "base": {"x": 0}}, base_dir=tmp_path)
    runner = RayRunner(2)
    plans = [PlannedRun(1, slot, "candidate", frozenset(), {"x": x}, 7) for slot, x in
             enumerate((0, 1))]
    runner.submit(env, plans)
    fast = next(ref for ref, (_, plan, _, _) in runner.pending.items() if plan.slot == 0)
    ray.wait([fast], timeout=60)
    try:
        finished = runner.stop()
    finally:
        runner.close()
    assert [(plan, outcome.metric, outcome.status) for plan, outcome in finished] == [
        (plans[0], 1.0, "ok")]
    assert runner.busy == 0


def test_a_ray_worker_killed_mid_run_is_survived_and_its_run_made_again(tmp_path, capsys):
    script = tmp_path / "experiment.py"
    script.write_text(EXPERIMENT)
    study = study_of(tmp_path, "kill", killing(script))
    assert study.run(write_report=False).status == "finished"
    assert (tmp_path / "killed").exists()
    runs = ledger_runs(tmp_path / "kill")
    assert len(runs) == study.runs_used >= 6 and len({(r[0], r[1]) for r in runs}) == len(runs)
    assert all(status == "ok" for *_, status in runs)
    with sqlite3.connect(tmp_path / "kill" / "study.db") as conn:
        extras = [json.loads(e) for (e,) in conn.execute("select extra_json from runs")]
    lost = [e["lost"] for e in extras if "lost" in e]
    assert len(lost) == 1 and len(lost[0]) == 1  # the killed run, made again once
    started = (tmp_path / "started.txt").read_text().split("\n")
    candidate_starts = [line for line in started if line.endswith(" 1")]
    candidate_runs = [r for r in runs if r[2] == "candidate"]
    assert len(candidate_starts) == len(candidate_runs) + 1  # one start lost, none repeated
    assert "made again after its worker failed" in capsys.readouterr().err


def test_a_run_lost_more_often_than_lost_retries_is_recorded_as_a_crash(tmp_path):
    script = tmp_path / "experiment.py"
    # every candidate run kills its worker: lost, made again once, lost again, then a crash
    script.write_text(EXPERIMENT.replace("and not marker.exists()", ""))
    study = study_of(tmp_path, "lost", killing(script))
    assert study.run(write_report=False).status == "finished"
    with sqlite3.connect(tmp_path / "lost" / "study.db") as conn:
        rows = conn.execute("select role, status, extra_json from runs").fetchall()
    candidates = [(status, json.loads(extra)) for role, status, extra in rows
                  if role == "candidate"]
    assert candidates and all(status == "crash" for status, _ in candidates)
    assert all(len(extra["lost"]) == 2 and "worker failed 2 times" in extra["reason"]
               for _, extra in candidates)
    assert all(status == "ok" for role, status, _ in rows if role != "candidate")


@pytest.mark.skipif(shutil.which("ray", path=str(Path(sys.executable).parent)) is None,
                    reason="the ray command is not installed beside this Python")
def test_the_runner_joins_a_cluster_that_is_already_running(tmp_path):
    """By `address`, then by RAY_ADDRESS, each study from the command line in a process of its
    own: Ray reads its authentication mode when it is imported, and the cluster and its client
    must agree on it (token, from ~/.ray/auth_token). `ray stop --force` afterwards stops every
    Ray process of this machine, as the test's cluster is one."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    port = "6391"
    subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, timeout=120)
    try:
        joined = {}
        for name, extra, variables in (
                ("by_address", f'address = "127.0.0.1:{port}"', {}),
                ("by_variable", "cpus_per_run = 0.5", {"RAY_ADDRESS": f"127.0.0.1:{port}"})):
            config = tmp_path / f"{name}.toml"
            config.write_text(synthetic("ray", extra))
            done = subprocess.run(
                [sys.executable, "-m", "engine.study", str(config), "--out",
                 str(tmp_path / name), "--quiet"],
                cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                env={**env, **variables}, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            assert "Connected to Ray cluster" in done.stderr
            assert "Started a local Ray instance" not in done.stderr
            joined[name] = ledger_runs(tmp_path / name)
        assert len(joined["by_address"]) >= 8
        assert joined["by_address"] == joined["by_variable"]
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=120)
