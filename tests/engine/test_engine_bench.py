"""The benchmark command: real studies on synthetic worlds, tables that say what was measured."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bench import (
    StudyScore,
    bootstrap_interval,
    render_markdown,
    study_config,
    summarise,
    verdict_lines,
)

REPO = Path(__file__).resolve().parents[2]

BENCH = """
[bench]
name = "tiny"
seeds = 3
budget_trials = 24
policies = ["efe", "ratchet"]
default_policy = "efe"
workers = 1

[defaults.study]
replicates_per_step = 2
base_runs = 2

[[worlds]]
name = "quiet"
[worlds.env]
kind = "synthetic"
n_hypotheses = 5
noise_sd = 0.3

[[worlds]]
name = "noisy"
[worlds.env]
kind = "synthetic"
n_hypotheses = 5
noise_sd = 1.5
"""


def test_bench_runs_every_policy_on_every_world_with_equal_budgets(tmp_path):
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent(BENCH))
    result = subprocess.run([sys.executable, "-m", "engine.bench", str(bench),
                             "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    studies = report["studies"]
    assert len(studies) == 2 * 2 * 3
    assert all(s["runs_used"] <= 24 for s in studies)
    assert {(s["world"], s["policy"]) for s in studies} == {(w, p) for w in ("quiet", "noisy")
                                                            for p in ("efe", "ratchet")}
    for row in report["summary"]:
        group = [s for s in studies if s["world"] == row["world"] and s["policy"] == row["policy"]]
        assert np.isclose(row["gain"], np.mean([s["gain"] for s in group]))
        assert row["gain_ci"][0] <= row["gain"] <= row["gain_ci"][1]
        kept = sum(s["keeps"] for s in group)
        assert ("false_keep_rate" in row) == (kept > 0)  # no keeps: no rate, not a 0
        assert 0 <= row.get("false_keep_rate", 0) <= 1 and 0 <= row.get("null_keep_rate", 0) <= 1
        assert all(s["false_keeps"] <= min(s["keeps"], s["null_decisions"]) for s in group)
        assert all(s["gain"] <= s["best_gain"] + 1e-9 for s in group)  # nobody beats the optimum
        # The model's own expectation of false keeps: posterior policies claim one, the ratchet
        # none.
        assert ("claimed_false_keep_rate" in row) == (row["policy"] != "ratchet" and kept > 0)
        assert 0 <= row.get("claimed_false_keep_rate", 0) <= 1
    markdown = (tmp_path / "out" / "bench.md").read_text()
    assert "| quiet | efe |" in markdown and "| noisy | ratchet |" in markdown
    assert (tmp_path / "out" / "bench.png").stat().st_size > 5000


def test_verdict_says_when_the_engine_loses():
    rows = [{"world": "w", "policy": "efe", "gain": 0.1, "keeps": 1.0, "false_keep_rate": 0.0},
            {"world": "w", "policy": "ratchet", "gain": 0.3, "keeps": 3.0, "false_keep_rate": 0.4}]
    text = "\n".join(verdict_lines(rows, {"default_policy": "efe"}))
    assert "LOWER: the engine loses here" in text
    rows[0]["gain"] = 0.5
    assert "at least as high" in "\n".join(verdict_lines(rows, {"default_policy": "efe"}))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=40))
def test_bootstrap_interval_brackets_the_mean(values):
    lo, hi = bootstrap_interval(np.array(values), np.random.default_rng(0))
    assert lo <= np.mean(values) + 1e-9 and np.mean(values) - 1e-9 <= hi


def test_a_world_may_set_its_own_budget_and_the_command_line_overrides_it(tmp_path):
    data = tomllib.loads(textwrap.dedent(BENCH))
    data["worlds"][1]["study"] = {"budget_trials": 10}
    quiet, noisy = (study_config(data, world, "efe", 0, tmp_path, tmp_path / "b.toml")
                    for world in data["worlds"])
    assert (quiet.study.budget_trials, noisy.study.budget_trials) == (24, 10)


def test_a_variant_is_a_named_policy_with_its_own_sections(tmp_path):
    data = tomllib.loads(textwrap.dedent(BENCH) + textwrap.dedent("""
        [variants.strict.policy]
        kind = "design"
        block_runs = 4
        [variants.strict.decision]
        threshold = 0.99
        """))
    cfg = study_config(data, data["worlds"][0], "strict", 0, tmp_path, tmp_path / "b.toml")
    assert (cfg.policy.kind, cfg.policy.block_runs, cfg.decision.threshold) == ("design", 4, 0.99)
    assert cfg.study.name == "quiet-strict-0" and "strict" in str(cfg.study.out_dir)
    plain = study_config(data, data["worlds"][0], "efe", 0, tmp_path, tmp_path / "b.toml")
    assert (plain.policy.kind, plain.decision.threshold) == ("efe", 0.95)
    bench = tmp_path / "bad.toml"
    bench.write_text(textwrap.dedent(BENCH) + "[variants.nokind.decision]\nthreshold = 0.9\n")
    result = subprocess.run([sys.executable, "-m", "engine.bench", str(bench)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "[variants.nokind] needs" in result.stderr


def test_every_final_configuration_is_judged_change_by_change(tmp_path):
    """The per-change share, for the engine and a baseline alike: changes whose removal from the
    final configuration loses no true gain, over the kept changes, pooled over seeds."""
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent(BENCH).replace('policies = ["efe", "ratchet"]',
                                                    'policies = ["design", "random-subsets"]')
                     .replace('default_policy = "efe"', 'default_policy = "design"'))
    result = subprocess.run([sys.executable, "-m", "engine.bench", str(bench),
                             "--out", str(tmp_path / "out"), "--seeds", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    for row in report["summary"]:
        group = [s for s in report["studies"]
                 if s["world"] == row["world"] and s["policy"] == row["policy"]]
        kept = sum(s["kept_changes"] for s in group)
        assert row["kept_changes"] == kept / len(group)
        if kept:
            assert row["change_false_rate"] == sum(s["changes_without_gain"] for s in group) / kept
        # the engine's posterior claims a share; a baseline claims nothing
        assert ("claimed_change_false_rate" in row) == (row["policy"] == "design" and kept > 0)
    assert "changes without gain" in (tmp_path / "out" / "bench.md").read_text()


def test_command_line_overrides_pick_held_out_worlds_and_the_budget(tmp_path):
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent(BENCH).replace('policies = ["efe", "ratchet"]',
                                                    'policies = ["efe"]')
                     + "[worlds.study]\nbudget_trials = 30\n")  # the noisy world's own
    result = subprocess.run([sys.executable, "-m", "engine.bench", str(bench),
                             "--out", str(tmp_path / "out"),
                             "--seeds", "2", "--first-seed", "50", "--budget-trials", "12"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    studies = json.loads((tmp_path / "out" / "bench.json").read_text())["studies"]
    assert sorted({s["seed"] for s in studies}) == [50, 51]
    assert all(s["runs_used"] <= 12 for s in studies)
    assert ("2 seeds per policy (from seed 50), 12 runs each"
            in (tmp_path / "out" / "bench.md").read_text())


def test_a_policy_that_kept_nothing_gets_no_rates_but_a_dash():
    """0 false keeps out of 0 keeps is not a measured rate of 0: the table says so."""
    def score(policy, seed, keeps, false_keeps, claimed):
        return StudyScore("w", policy, seed, gain=0.1 * keeps, best_gain=1.0, keeps=keeps,
                          claimed_false_keeps=claimed, false_keeps=false_keeps, null_decisions=3,
                          runs_used=20, wall_seconds=1.0, truth_source="truth")

    rows = summarise([score("efe", 0, 0, 0, 0.0), score("efe", 1, 0, 0, 0.0),
                      score("ratchet", 0, 4, 2, None), score("ratchet", 1, 2, 1, None)])
    efe, ratchet = rows
    assert {"false_keep_rate", "claimed_false_keep_rate"}.isdisjoint(efe)
    assert efe["null_keep_rate"] == 0.0  # verdicts on null changes were made: 0 of 6 kept
    assert ratchet["false_keep_rate"] == 0.5 and "claimed_false_keep_rate" not in ratchet
    table = render_markdown(
        rows, {"name": "t", "seeds": 2, "budget_trials": 20, "default_policy": "efe"}, 1.0)
    assert "| w | efe | +0 [+0, +0] | 0.00 [0.00, 0.00] | — | — | 0.000 [0.000, 0.000] |" in table
    assert "it kept nothing, so it made no false keep" in table


SLOW_EXPERIMENT = """
import sys, time, random
args = dict(a.split("=", 1) for a in sys.argv[1:])
time.sleep(0.3)
print("loss:", 1.0 - 0.5 * float(args["boost"]) + random.Random(int(args["seed"])).gauss(0, 0.3))
"""


def test_an_interrupted_bench_writes_no_scores(tmp_path):
    """Ctrl-C mid-study: the half-finished study is not scored, nothing is written, exit 130."""
    script = tmp_path / "experiment.py"
    script.write_text(SLOW_EXPERIMENT)
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent(f"""
        [bench]
        name = "slow"
        seeds = 2
        budget_trials = 30
        policies = ["efe"]
        default_policy = "efe"
        workers = 1

        [[worlds]]
        name = "command"
        [worlds.env]
        kind = "command"
        command = "{sys.executable} {script} seed={{seed}} boost={{boost}}"
        metric = "loss"
        base = {{ boost = 0 }}

        [[worlds.hypotheses]]
        name = "boost"
        category = "architecture"
        change = {{ boost = 1 }}
        """))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "engine.bench", str(bench), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    db = out / "studies" / "command" / "efe" / "seed0" / "study.db"
    deadline = time.monotonic() + 120
    while not (db.exists() and db.stat().st_size > 0) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)  # a few runs into the first study
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Interrupted: no bench.md" in stderr
    assert not (out / "bench.md").exists() and not (out / "bench.json").exists()
