"""The loop shell around the core: a live study and its replay are one state, and a study
stopped in the middle of a step resumes to exactly the ledger of one that was never stopped."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from engine.config import load_config
from engine.runner import LocalRunner
from engine.study import Study

CONFIG = """
[study]
name = "loop"
seed = 11
budget_trials = 30
replicates_per_step = 2
incumbent_runs_per_step = 1
base_runs = 2

[env]
kind = "synthetic"
n_hypotheses = 5
effect_size = 1.0
noise_sd = 0.6
n_interactions = 2
interaction_size = 1.0
world_seed = 4

[beliefs]
interactions = true
fit_pymc = false
"""
REPO = Path(__file__).resolve().parents[2]
TIME_COLUMNS = {"id", "started", "finished", "created", "seconds", "code_hash"}


class StopsAfter:
    """A runner mixin: interrupted (as by Ctrl-C) once `limit` runs have finished."""

    limit = 0

    def next_finished(self):
        if self.limit == 0:
            raise KeyboardInterrupt
        self.limit -= 1
        return super().next_finished()


class LocalStopsAfter(StopsAfter, LocalRunner):
    pass


def stopped_then_resumed(broken, runner, open_again):
    """Run `broken` on `runner` until the runner stops it; the replay of its folder must be its
    state; then the study opened again (`open_again()`), run to the end."""
    broken.runner = runner
    assert broken.run(write_report=False).status == "stopped"
    resumed = open_again()
    same_state(broken.state, resumed.state)
    assert resumed.run(write_report=False).status == "finished"
    return resumed


def open_study(tmp_path: Path, folder: str) -> Study:
    path = tmp_path / "loop.toml"
    path.write_text(textwrap.dedent(CONFIG))
    return Study(load_config(path, out_dir=str(tmp_path / folder)))


def ledger(db: Path) -> dict[str, list[dict]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {table: [{k: row[k] for k in row.keys() if k not in TIME_COLUMNS}
                        for row in conn.execute(f"select * from {table} order by rowid")]
                for table in ("plans", "runs", "decisions", "episodes")}


def same_state(a, b) -> None:
    for name in ("hypotheses", "plans", "runs", "run_seconds", "concluded", "incumbent", "kept",
                 "closed"):
        assert getattr(a, name) == getattr(b, name), name
    configs = [frozenset(), frozenset({"h0", "h1"}), frozenset(a.hypotheses)]
    ours, theirs = (s.beliefs.posterior_mean(configs) for s in (a, b))
    assert np.array_equal(ours.mean, theirs.mean) and np.array_equal(ours.scale, theirs.scale)


def test_a_live_study_and_its_replay_are_the_same_state(tmp_path):
    study = open_study(tmp_path, "out")
    result = study.run(write_report=False)
    assert result.status == "finished" and result.runs_used == 30
    same_state(study.state, open_study(tmp_path, "out").state)


def test_a_study_stopped_mid_step_resumes_to_the_ledger_of_an_unbroken_one(tmp_path):
    unbroken = open_study(tmp_path, "unbroken")
    unbroken.run(write_report=False)
    for limit in (3, 8):  # stops inside a step: some of its runs are in, the rest are not
        folder = f"broken{limit}"
        broken, runner = open_study(tmp_path, folder), LocalStopsAfter()
        runner.limit = limit
        resumed = stopped_then_resumed(broken, runner, lambda: open_study(tmp_path, folder))
        assert broken.state.pending is not None and broken.state.runs_used == limit
        assert ledger(tmp_path / folder / "study.db") == ledger(tmp_path / "unbroken" / "study.db")
        same_state(resumed.state, unbroken.state)


HASH_CONFIG = """
[study]
name = "hash"
seed = 0
budget_trials = 40
replicates_per_step = 2
incumbent_runs_per_step = 1
base_runs = 2

[env]
kind = "synthetic"
n_hypotheses = 8
effect_size = 1.0
noise_sd = 0.5
n_interactions = 4
interaction_size = 1.0
world_seed = 0

[beliefs]
interactions = true
fit_pymc = false

[policy]
kind = "thompson"
"""


def test_a_study_is_the_same_whatever_the_processs_hash_seed(tmp_path):
    """Set orders of strings follow PYTHONHASHSEED; no float of a study may. (In this world,
    interaction columns added in a set's order gave intervals that differed past 1e-12.)"""
    path = tmp_path / "hash.toml"
    path.write_text(textwrap.dedent(HASH_CONFIG))
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", "import sys; from engine.study import Study; "
                        "from engine.config import load_config; "
                        "Study(load_config(sys.argv[1], out_dir=sys.argv[2]))"
                        ".run(write_report=False)",
                        str(path), str(tmp_path / hash_seed)], cwd=REPO, env=env, check=True)
    assert ledger(tmp_path / "1" / "study.db") == ledger(tmp_path / "2" / "study.db")


EXPLODING_SCRIPT = """
import random, sys
x, seed = int(sys.argv[1]), int(sys.argv[2])
print("loss:", 1e308 if x else 1 + random.Random(seed).gauss(0, 0.1))
"""
EXPLODING = """
[study]
name = "explodes"
seed = 3
budget_trials = 14
base_runs = 2

[env]
kind = "command"
command = "PYTHON SCRIPT {x} {seed}"
metric = "loss"
base = { x = 0 }

[[hypotheses]]
name = "explodes"
category = "optimizer"
change = { x = 1 }

[[hypotheses]]
name = "calm"
category = "optimizer"
change = { x = 0 }

[beliefs]
fit_pymc = false

[policy]
kind = "voi"  # one change per trial: the exploding one gets its own verdict
"""


def test_an_exploding_metric_is_a_failed_run_and_the_study_goes_on(tmp_path):
    """A loss of 1e308 once overflowed the posterior after the step's plan was written, so every
    resume failed at the same place; now it is a failed run (status nan) and the study goes on."""
    script, path = tmp_path / "explode.py", tmp_path / "explodes.toml"
    script.write_text(EXPLODING_SCRIPT)
    path.write_text(EXPLODING.replace("PYTHON", sys.executable).replace("SCRIPT", str(script)))
    study = Study(load_config(path, out_dir=str(tmp_path / "out")))
    result = study.run(write_report=False)
    assert result.status == "finished" and result.runs_used == 14
    exploded = [r for r in study.state.runs if "explodes" in r.config]
    assert exploded and all(r.status == "nan" and r.value is None for r in exploded)
    assert study.closed["explodes"].verdict == "revert"
