"""Optuna's samplers as benchmark baselines: ask/tell over subsets of hypotheses, the best trial
taken as final, and false keeps judged by the truth."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.baselines import best_subset, verdicts_without_gain
from tests.engine.test_engine_bench import BENCH

REPO = Path(__file__).resolve().parents[2]
EFFECTS = {"a": -1.0, "b": 0.0, "c": 0.5, "d": -0.25}


def truth(applied: frozenset[str]) -> float:
    return 10.0 + sum(EFFECTS[n] for n in applied)


def no_gain(without: frozenset[str], members: frozenset[str]) -> bool:
    return truth(without | members) - truth(without) >= 0


@pytest.mark.parametrize("sampler", ["optuna-tpe", "optuna-gp", "random-subsets"])
def test_the_final_configuration_is_the_best_trial_and_failed_runs_are_failed_trials(sampler):
    tried: list[tuple[float, frozenset[str]]] = []

    def run(applied, seed):
        if applied == frozenset({"c"}):
            return None  # a crash: never the best trial
        value = truth(applied) + (seed % 1000) / 1e4  # a little seed luck
        tried.append((value, applied))
        return value

    chosen = best_subset(sampler, list(EFFECTS), run, 16, seed=3, direction="lower")
    assert chosen == min(tried, key=lambda t: t[0])[1]
    tried.clear()
    higher = best_subset(sampler, list(EFFECTS), run, 16, seed=3, direction="higher")
    assert higher == max(tried, key=lambda t: t[0])[1]
    assert best_subset(sampler, ["a"], lambda applied, seed: None, 3, 0, "lower") == frozenset()


def test_false_keeps_and_null_verdicts_match_an_additive_truth():
    """Additive effects: a kept change is false exactly when its effect is >= 0 (lower is
    better), and each change with effect >= 0 is a null verdict, kept or not."""
    for size in range(len(EFFECTS) + 1):
        for applied in map(frozenset, itertools.combinations(EFFECTS, size)):
            false_keeps, nulls, judged = verdicts_without_gain(applied, list(EFFECTS), no_gain)
            assert false_keeps == sum(EFFECTS[n] >= 0 for n in applied)
            assert nulls == sum(e >= 0 for e in EFFECTS.values())
            assert judged == len(applied)


def test_changes_whose_truth_is_unknown_are_left_out_of_every_count():
    def unknown_for_b(without, members):
        return None if "b" in members else no_gain(without, members)

    applied = frozenset({"a", "b", "c"})
    assert verdicts_without_gain(applied, list(EFFECTS), unknown_for_b) == (1, 1, 2)


def test_the_bench_runs_optuna_beside_the_engine_on_equal_budgets(tmp_path):
    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent(BENCH).replace('policies = ["efe", "ratchet"]',
                                                    'policies = ["efe", "optuna-tpe"]')
                     .replace("seeds = 3", "seeds = 2").replace("budget_trials = 24",
                                                                 "budget_trials = 16"))
    result = subprocess.run([sys.executable, "-m", "engine.bench", str(bench), "--out",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    optuna_rows = [s for s in report["studies"] if s["policy"] == "optuna-tpe"]
    assert len(optuna_rows) == 4 and all(s["runs_used"] == 16 for s in optuna_rows)
    assert all(s["claimed_false_keeps"] is None for s in optuna_rows)
    markdown = (tmp_path / "out" / "bench.md").read_text()
    assert "Targets for `efe` against `optuna-tpe` at equal budget:" in markdown
