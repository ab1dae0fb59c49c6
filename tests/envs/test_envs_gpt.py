"""The gpt env: the summary parser, every failure path with a fake trainer, and one real tiny
run."""
from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import pytest

from envs import GptEnv, make_env
from envs.gpt import TRAIN_PACKAGE, parse_summary

SUMMARY = """step 00010 | loss 3.2
---
val_bpb:          2.512300
training_seconds: 30.1
total_seconds:    35.9
peak_vram_mb:     0.0
mfu_percent:      1.20
total_tokens_M:   0.9
num_steps:        220
num_params_M:     0.4
depth:            2
eval_hash:        3f2a9c0d1e7b
backend:          cpu
seed:             1
"""

# A stand-in for `python -m train`: it takes the same flags and behaves as the config's "mode" says.
FAKE_TRAINER = r'''
import argparse, json, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--config"); parser.add_argument("--seed", type=int)
parser.add_argument("--backend"); parser.add_argument("--steps", type=int)
parser.add_argument("--time-budget", type=float)
args = parser.parse_args()
config = json.load(open(args.config))
mode = config.get("mode", "ok")
print("step 1 | loss 3.0", file=sys.stderr)
if mode == "hang":
    time.sleep(60)
if mode == "crash":
    print("Traceback: something broke", file=sys.stderr); sys.exit(3)
if mode == "fail":
    print("FAIL: loss is nan at step 3"); sys.exit(1)
if mode == "no_summary":
    print("finished without a summary"); sys.exit(0)
budget = f"steps{args.steps}" if args.steps else f"seconds{args.time_budget}"
print("---")
print(f"val_bpb:          {config.get('val_bpb', 2.5) + args.seed / 1000:.6f}")
print("training_seconds: 1.5")
print("peak_vram_mb:     12.5")
print(f"num_steps:        {args.steps or 99}")
print(f"eval_hash:        {config.get('eval_hash', 'aaaa')}")
print(f"backend:          {args.backend}")
print(f"budget:           {budget}")
'''


@pytest.fixture
def fake_trainer(tmp_path) -> list[str]:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    return [sys.executable, str(script)]


def fake_env(trainer: list[str], tmp_path: Path, **kwargs) -> GptEnv:
    return GptEnv(**{"steps": 7, "timeout_s": 20.0, "base_dir": tmp_path,
                     "trainer_command": trainer, **kwargs})


def test_parse_summary_reads_the_contract_block_with_types():
    summary = parse_summary(SUMMARY)
    assert summary["val_bpb"] == 2.5123 and summary["training_seconds"] == 30.1
    assert summary["num_steps"] == 220 and isinstance(summary["num_steps"], int)
    assert summary["eval_hash"] == "3f2a9c0d1e7b" and summary["backend"] == "cpu"
    assert summary["seed"] == 1 and summary["depth"] == 2
    assert len(summary) == 12


def test_parse_summary_uses_the_last_block_and_keeps_unparsable_values_as_text():
    text = "---\nval_bpb: 9.0\n---\nval_bpb: oops\nnum_steps: 5\nno colon here\n"
    assert parse_summary(text) == {"val_bpb": "oops", "num_steps": 5}
    assert parse_summary("val_bpb: 1.0\n") is None
    assert parse_summary("---\n") is None


def test_ok_run_passes_config_seed_backend_and_budget(fake_trainer, tmp_path):
    env = fake_env(fake_trainer, tmp_path, backend="cpu")
    outcome = env.run({"val_bpb": 2.0}, seed=3)
    assert outcome.status == "ok"
    assert outcome.metric == pytest.approx(2.003)
    assert outcome.steps == 7
    assert outcome.extra["peak_vram_mb"] == 12.5 and outcome.extra["training_seconds"] == 1.5
    assert outcome.extra["backend"] == "cpu" and outcome.extra["budget"] == "steps7"
    assert env.pinned_eval_hash == env.eval_hash == "aaaa"
    timed = fake_env(fake_trainer, tmp_path, steps=0, time_budget=4.0).run({}, seed=0)
    assert timed.extra["budget"] == "seconds4.0" and timed.steps == 99


@pytest.mark.parametrize("mode, status, reason", [
    ("crash", "crash", "status 3"),
    ("fail", "nan", "FAIL: loss is nan"),
    ("no_summary", "crash", "no summary block"),
])
def test_failed_runs_become_statuses(fake_trainer, tmp_path, mode, status, reason):
    outcome = fake_env(fake_trainer, tmp_path).run({"mode": mode}, seed=0)
    assert outcome.status == status and outcome.metric is None
    assert reason in outcome.extra["reason"]
    assert "step 1 | loss 3.0" in outcome.extra["stderr_tail"]


def test_a_hanging_trainer_times_out(fake_trainer, tmp_path):
    outcome = fake_env(fake_trainer, tmp_path, timeout_s=1.5).run({"mode": "hang"}, seed=0)
    assert outcome.status == "timeout"
    assert 1.5 <= outcome.seconds < 10


def test_a_nan_metric_in_the_summary_is_nan(fake_trainer, tmp_path):
    outcome = fake_env(fake_trainer, tmp_path).run({"val_bpb": float("nan")}, seed=0)
    assert outcome.status == "nan"


def test_a_changed_eval_hash_is_refused(fake_trainer, tmp_path):
    env = fake_env(fake_trainer, tmp_path)
    assert env.pinned_eval_hash is None
    assert env.run({"eval_hash": "aaaa"}, seed=0).status == "ok"
    refused = env.run({"eval_hash": "bbbb"}, seed=1)
    assert refused.status == "refused" and refused.metric is None
    assert "bbbb" in refused.extra["reason"] and "aaaa" in refused.extra["reason"]
    assert env.pinned_eval_hash == "aaaa"
    # the study's pin, on resume
    resumed = fake_env(fake_trainer, tmp_path, pinned_eval_hash="cccc")
    assert resumed.run({"eval_hash": "aaaa"}, seed=0).status == "refused"
    assert resumed.run({"eval_hash": "cccc"}, seed=0).status == "ok"


def test_fingerprint_ignores_the_eval_hash_and_env_pickles(fake_trainer, tmp_path):
    env = fake_env(fake_trainer, tmp_path, base={"n_layer": 2})
    before = env.fingerprint()
    env.run({}, seed=0)
    assert env.fingerprint() == before
    assert fake_env(fake_trainer, tmp_path, base={"n_layer": 3}).fingerprint() != before
    clone = pickle.loads(pickle.dumps(env))  # the Ray runner ships envs to workers
    assert clone.pinned_eval_hash == "aaaa" and clone.run({}, seed=1).status == "ok"


def test_code_hash_covers_the_train_package():
    env = GptEnv(steps=5)
    assert len(env.code_hash) == 16
    assert env.code_hash == GptEnv(steps=9).code_hash


@pytest.mark.parametrize("kwargs, fragment", [
    ({"backend": "tpu"}, "backend"),
    ({"time_budget": 700.0, "timeout_s": 600.0}, "time_budget"),
    ({"steps": -1}, "steps"),
    ({"direction": "down"}, "direction"),
])
def test_impossible_settings_are_rejected(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        GptEnv(**kwargs)


# The smallest model train/config.py accepts that still runs every code path, on one thread.
TINY_TRAINER_CONFIG = {"n_layer": 1, "n_embd": 32, "n_head": 2, "seq_len": 32, "batch_size": 2,
                       "eval_seq_len": 32, "eval_tokens": 1024, "threads": 1}
needs_trainer = pytest.mark.skipif(not (TRAIN_PACKAGE / "__main__.py").exists(),
                                   reason="train/ has no __main__ yet")


def tiny_gpt_env(tmp_path: Path) -> GptEnv:
    return make_env({"kind": "gpt", "backend": "cpu", "steps": 3, "time_budget": 30.0,
                     "timeout_s": 240.0, "metric": "val_bpb", "direction": "lower",
                     "base": TINY_TRAINER_CONFIG}, base_dir=tmp_path)


@pytest.mark.slow
@needs_trainer
def test_a_real_tiny_training_run(tmp_path):
    """From a folder holding a `train` package of the user's own, which `python -m train` run
    there would pick: the engine's trainer runs, and its data check too."""
    shadow = tmp_path / "train"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "__main__.py").write_text("print('---\\nval_bpb: 0.5\\nnum_steps: 99')\n")
    (shadow / "prepare.py").write_text("raise SystemExit('not the engine prepare')\n")
    env = tiny_gpt_env(tmp_path)
    assert env.preflight_problem() is None
    outcome = env.run(dict(TINY_TRAINER_CONFIG), seed=0)
    assert outcome.status == "ok", outcome.extra
    assert 0.0 < outcome.metric < 20.0 and outcome.metric != 0.5
    assert outcome.steps == 3
    assert env.pinned_eval_hash == outcome.extra["eval_hash"]
    assert outcome.extra["backend"] == "cpu" and outcome.extra["seed"] == 0


@pytest.mark.slow
@needs_trainer
def test_a_real_nan_loss_is_nan_and_pins_nothing(tmp_path):
    env = tiny_gpt_env(tmp_path)
    nan = env.run({**TINY_TRAINER_CONFIG, "debug_nan_step": 1}, seed=0)
    assert nan.status == "nan" and nan.extra["reason"].startswith("FAIL"), nan.extra
    assert env.pinned_eval_hash is None


@pytest.mark.parametrize("change, fragment", [
    ({"data": "leak.txt"}, "'data' is pinned: it sets the training data"),
    ({"steps": 10_000}, "'steps' is pinned: it sets the budget"),
    ({"untimed_steps": 10_000}, "'untimed_steps' is pinned: it sets the budget"),
    ({"eval_tokens": 64}, "'eval_tokens' is pinned: it sets the evaluation"),
    ({"backend": "mps"}, "'backend' is pinned"),
    ({"matix_lr": 0.1}, "'matix_lr' is not a trainer knob; did you mean 'matrix_lr'?"),
    ({"n_head": 3}, "on top of [env] base, bad value for 'n_embd'"),
    ({"matrix_lr": "fast"}, "bad value for 'matrix_lr': 'fast'"),
])
def test_a_change_the_trainer_would_not_take_or_that_games_it_is_refused(change, fragment):
    env = GptEnv(base={"n_embd": 32, "n_head": 2})
    assert fragment in env.change_problem(change)
    assert env.change_problem({"matrix_lr": 0.1, "n_layer": 3}) is None
    assert set(env.mutable_knobs()).isdisjoint({"data", "steps", "time_budget", "eval_tokens"})


@pytest.mark.parametrize("base, fragment", [
    ({"steps": 100}, "'steps' is set by [env] steps"),
    ({"time_budget": 1e6}, "'time_budget' is set by [env] time_budget"),
    ({"matix_lr": 0.1}, "did you mean 'matrix_lr'?"),
    ({"n_embd": 30, "n_head": 4}, "bad value for 'n_embd'"),
])
def test_a_base_that_escapes_the_budget_or_the_trainer_is_refused(base, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        GptEnv(base=base)


@pytest.mark.slow
@needs_trainer
def test_a_real_run_on_data_that_repeats_the_validation_text_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_DATA_DIR", str(tmp_path / "cache"))
    documents = [f"verse {i}: and it was so, " + "again " * (i % 5) + str(i * 104729)
                 for i in range(600)]
    (tmp_path / "leak.txt").write_text("\n\n".join(documents[:60] * 4 + documents[60:]))
    base = {**TINY_TRAINER_CONFIG, "data": "leak.txt"}
    env = make_env({"kind": "gpt", "backend": "cpu", "steps": 3, "time_budget": 30.0,
                    "timeout_s": 240.0, "metric": "val_bpb", "direction": "lower",
                    "base": base}, base_dir=tmp_path)
    outcome = env.run(base, seed=0)
    assert outcome.status == "refused", outcome.extra
    assert outcome.extra["reason"].startswith("REFUSED: the training data holds validation")
