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

from engine.bench import StudyScore, bootstrap_interval, summarise
from engine.bench_config import load_bench, study_config
from engine.bench_report import render_markdown, verdict_lines

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
    text = (tmp_path / "out" / "bench.md").read_text()
    assert "changes without gain" in text
    chart = text[text.index("fraction of the best gain"):].split("```")[0].splitlines()[1:]
    for row in report["summary"]:  # the text chart: one bar per world and policy, its length
        # the fraction of the best gain in thirtieths
        section = chart[chart.index(row["world"]) + 1:]
        line = next(line for line in section if line.split()[0] == row["policy"])
        bar = line.split()[1] if "#" in line.split()[1] else ""
        assert len(bar) == round(max(0.0, min(1.0, row["fraction_of_best"])) * 30)
        assert f"{row['fraction_of_best']:.2f}" in line


def test_command_line_overrides_pick_held_out_worlds_and_the_budget(tmp_path):
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent(BENCH) + "[worlds.study]\nbudget_trials = 30\n")
    result = subprocess.run([sys.executable, "-m", "engine.bench", str(bench),
                             "--out", str(tmp_path / "out"), "--policies", "efe",
                             "--seeds", "2", "--first-seed", "50", "--budget-trials", "12"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    studies = json.loads((tmp_path / "out" / "bench.json").read_text())["studies"]
    assert {s["policy"] for s in studies} == {"efe"}  # the file's ratchet left out
    assert sorted({s["seed"] for s in studies}) == [50, 51]
    assert all(s["runs_used"] <= 12 for s in studies)
    assert ("2 seeds per policy (from seed 50), 12 runs each"
            in (tmp_path / "out" / "bench.md").read_text())


def test_the_text_chart_shows_a_dash_where_the_best_gain_is_not_known():
    """A world measured by a truth table has no best reachable gain, so no fraction of it."""
    from engine.bench_report import text_chart

    lines = text_chart([{"world": "gpt", "policy": "design", "kept_changes": 1.0,
                         "change_false_rate": 0.0},
                        {"world": "gpt", "policy": "ratchet", "kept_changes": 2.0}])
    assert lines[1] == "gpt"
    assert lines[2].split()[:2] == ["design", "—"] and lines[3].split() == ["ratchet", "—", "—"]


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


def command_world(script: Path) -> str:
    """A bench world whose runs are SLOW_EXPERIMENT, one `boost` hypothesis."""
    return textwrap.dedent(f"""
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
        """)


def test_an_interrupted_bench_writes_no_scores_and_resumes_as_if_never_stopped(tmp_path):
    """Ctrl-C mid-study: the half-finished study is not scored, nothing is written, exit 130.
    --resume then finishes every study where it stopped, with the scores of a bench that was
    never interrupted."""
    script = tmp_path / "experiment.py"
    script.write_text(SLOW_EXPERIMENT)
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent("""
        [bench]
        name = "slow"
        seeds = 2
        budget_trials = 12
        reeval_runs = 2
        policies = ["efe"]
        default_policy = "efe"
        workers = 1

        """) + command_world(script))
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
    assert "Interrupted: no bench.md" in stderr and "--resume" in stderr
    assert not (out / "bench.md").exists() and not (out / "bench.json").exists()

    def scores(folder: Path, *flags: str) -> list[tuple]:
        done = subprocess.run([sys.executable, "-m", "engine.bench", str(bench), "--out",
                               str(folder), *flags], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        studies = json.loads((folder / "bench.json").read_text())["studies"]
        return [(s["seed"], s["gain"], s["keeps"], s["runs_used"], s["final"]) for s in studies]

    assert scores(out, "--resume") == scores(tmp_path / "uninterrupted")


TRUTH_POOL = """
[study]
name = "pool"

[env]
kind = "synthetic"
world_seed = 3
n_hypotheses = 8
effects = "dense"
effect_size = 0.6
noise_sd = 0.4
seed_sd = 0.3
"""


def test_a_truth_table_labels_changes_by_their_paired_interval_and_resumes(tmp_path):
    """experiments/truth_gpt.py on a synthetic pool: each label agrees with the world's own
    effect wherever that is far from 0 against the paired noise, and a rerun runs nothing."""
    from envs.synthetic import SyntheticEnv

    pool = tmp_path / "pool.toml"
    pool.write_text(TRUTH_POOL)
    argv = [sys.executable, "experiments/truth_gpt.py", "--pool", str(pool), "--seeds", "16",
            "--cache", str(tmp_path / "runs.jsonl"), "--workers", "1"]
    first = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    table = json.loads((tmp_path / "pool.json").read_text())
    env = SyntheticEnv(**{k: v for k, v in tomllib.loads(TRUTH_POOL)["env"].items()
                          if k != "kind"})
    # paired sd: two runs' noise (the luck of a seed is partly shared)
    paired_se = np.sqrt(2 * (0.4**2 + 0.3**2)) / np.sqrt(16)
    for name, effect in env.true_effects().items():
        row = table["hypotheses"][name]
        assert row["n_seeds"] == 16 and row["lo"] <= row["effect"] <= row["hi"]
        if abs(effect) > 6 * paired_se:
            assert row["label"] == ("helps" if effect < 0 else "hurts"), (name, effect, row)
    assert {row["label"] for row in table["hypotheses"].values()} >= {"helps", "hurts"}
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "0 to run" in again.stderr
    assert json.loads((tmp_path / "pool.json").read_text())["hypotheses"] == table["hypotheses"]


def test_a_world_with_a_truth_table_counts_false_keeps_by_its_labels(tmp_path):
    """Keeps of changes the table says hurt are false keeps, keeps of "unclear" ones are not
    judged, and a configuration's value is its mean at the table's seeds, paired with the base
    (recomputed here from the env's own runs)."""
    from engine.study import Study
    from envs.synthetic import SyntheticEnv
    from policies.types import move_members

    pool = tmp_path / "pool.toml"
    pool.write_text(TRUTH_POOL)
    made = subprocess.run([sys.executable, "experiments/truth_gpt.py", "--pool", str(pool),
                           "--seeds", "16", "--cache", str(tmp_path / "runs.jsonl")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    table = json.loads((tmp_path / "pool.json").read_text())
    # one labelled change relabelled "unclear": its keeps must drop out of the count
    unclear = next(n for n, row in table["hypotheses"].items() if row["label"] == "helps")
    table["hypotheses"][unclear]["label"] = "unclear"
    (tmp_path / "pool.json").write_text(json.dumps(table))
    env_lines = TRUTH_POOL.split("[env]\n")[1]
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent("""
        [bench]
        name = "table"
        seeds = 3
        budget_trials = 24
        policies = ["design", "ratchet"]
        reeval_runs = 4
        vary_world = false
        false_keep_target = 0.1

        [[worlds]]
        name = "pooled"
        truth_table = "pool.json"
        [worlds.env]
        """) + env_lines)
    result = subprocess.run([sys.executable, "-m", "engine.bench", str(bench), "--out",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    env = SyntheticEnv(**{k: v for k, v in tomllib.loads(TRUTH_POOL)["env"].items()
                          if k != "kind"})
    seeds = table["seeds"][:4]
    labels = {n: row["label"] for n, row in table["hypotheses"].items()}
    data = tomllib.loads(bench.read_text())
    counted = []
    for score in report["studies"]:
        assert score["truth_source"] == "table"
        counted.append((score["keeps"] - score["judged_keeps"], score["false_keeps"]))
        study = Study(study_config(data, data["worlds"][0], score["policy"], score["seed"],
                                tmp_path / "out", bench))
        keeps = [move_members(d["hypothesis"]) for d in study.ledger.decisions(study.study_id)
                 if d["verdict"] == "keep"]
        judged = [m for m in keeps if all(labels[n] != "unclear" for n in m)]
        assert score["keeps"] == len(keeps) and score["judged_keeps"] == len(judged)
        assert score["false_keeps"] == sum(
            sum(table["hypotheses"][n]["effect"] for n in m) >= 0 for m in judged)
        config = {n: n in study.incumbent for n in env.names}
        gain = np.mean([env.run({}, s).metric - env.run(config, s).metric for s in seeds])
        assert np.isclose(score["gain"], gain)
    # the fixture exercises both: keeps left unjudged, and false keeps (the noisy ratchet's)
    assert sum(u for u, _ in counted) > 0 and sum(f for _, f in counted) > 0
    markdown = (tmp_path / "out" / "bench.md").read_text()
    assert "Targets for `design` against `ratchet`" in markdown
    assert "within 10%" in markdown or "ABOVE 10%" in markdown


def test_a_world_measured_only_by_runs_needs_reeval_runs_before_anything_runs(tmp_path):
    script = tmp_path / "experiment.py"
    script.write_text(SLOW_EXPERIMENT)
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent("""
        [bench]
        seeds = 1
        policies = ["efe"]
        """) + command_world(script))
    result = subprocess.run([sys.executable, "-m", "engine.bench", str(bench), "--out",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "set [bench] reeval_runs >= 1" in result.stderr
    assert not (tmp_path / "out" / "studies").exists()


def test_a_world_may_take_its_sections_from_a_study_config(tmp_path):
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        [study]
        name = "mine"
        seed = 9
        budget_trials = 14
        [env]
        kind = "synthetic"
        n_hypotheses = 3
        [decision]
        threshold = 0.9
        """))
    (tmp_path / "bench.toml").write_text(textwrap.dedent("""
        [bench]
        budget_trials = 50
        [[worlds]]
        name = "from-file"
        config = "study.toml"
        [worlds.decision]
        threshold = 0.99
        """))
    data = load_bench(tmp_path / "bench.toml")
    cfg = study_config(data, data["worlds"][0], "design", 3, tmp_path, tmp_path / "bench.toml")
    assert (cfg.env["n_hypotheses"], cfg.study.budget_trials) == (3, 14)  # the study's own
    assert cfg.decision.threshold == 0.99  # the world's table beats the file's
    assert (cfg.study.seed, cfg.study.name) == (3, "from-file-design-3")  # the bench's


def test_every_committed_bench_and_study_config_is_valid_and_matches_its_truth_table(tmp_path):
    """The experiments/ files as committed: each study config parses, and each bench's every
    (world, policy) builds a valid study config whose truth table (where it names one) holds its
    hypotheses with the same changes, measured with the same env."""
    from engine.config import load_config
    from engine.truth import truth_table

    folder = REPO / "experiments"
    benches = [p for p in sorted(folder.glob("*.toml")) if "bench" in tomllib.loads(p.read_text())]
    for path in sorted(set(folder.rglob("*.toml")) - set(benches)):  # demo folders too
        load_config(path)
    tables = 0
    for path in benches:
        data = load_bench(path)
        for world in data["worlds"]:
            for policy in data["bench"].get("policies", ["design", "ratchet"]):
                cfg = study_config(data, world, policy, 0, tmp_path, path)
                tables += truth_table(world, path, cfg.env, cfg.hypotheses) is not None
    assert tables >= 4  # bench_gpt_cpu's three policies and the quickstart's two
