"""`python -m train` in subprocesses: the summary contract, determinism, budgets, exit codes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

SUMMARY_KEYS = [
    "val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "peak_rss_mb", "mfu_percent",
    "total_tokens_M",
    "num_steps", "num_params_M", "depth", "eval_hash", "backend", "device_name", "seed",
]


def summary_values(stdout: str) -> dict[str, str]:
    """key -> value text of the block after the last line that is exactly '---'."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "---")
    pairs = (line.split(":", 1) for line in lines[start + 1 :])
    return {key: value.strip() for key, value in pairs}


def test_summary_block_is_the_contract_and_same_seed_is_bit_identical(run_cli, tiny_flags):
    first = run_cli([*tiny_flags, "--steps", "12", "--seed", "5"])
    assert first.returncode == 0, first.stderr
    summary = summary_values(first.stdout)
    assert list(summary) == SUMMARY_KEYS
    lines = first.stdout.splitlines()
    assert lines[-15] == "---" and lines[-14].startswith("val_bpb:          ")
    # a CPU run's memory is its peak RSS: at least the torch it imported
    assert float(summary["peak_vram_mb"]) == 0.0 and float(summary["peak_rss_mb"]) > 100
    assert summary["num_steps"] == "12" and summary["depth"] == "1" and summary["seed"] == "5"
    assert summary["backend"] == "cpu" and len(summary["eval_hash"]) == 12
    assert summary["device_name"] == "cpu"
    assert float(summary["total_tokens_M"]) == pytest.approx(12 * 8 * 64 / 1e6, abs=5e-4)
    second = run_cli([*tiny_flags, "--steps", "12", "--seed", "5"])
    assert summary_values(second.stdout)["val_bpb"] == summary["val_bpb"]
    other_seed = run_cli([*tiny_flags, "--steps", "12", "--seed", "6"])
    assert summary_values(other_seed.stdout)["val_bpb"] != summary["val_bpb"]
    assert summary_values(other_seed.stdout)["eval_hash"] == summary["eval_hash"]


def test_time_budget_bounds_the_timed_training_seconds(run_cli, tiny_flags):
    result = run_cli([*tiny_flags, "--time-budget", "1.5"])
    assert result.returncode == 0, result.stderr
    summary = summary_values(result.stdout)
    assert 1.5 <= float(summary["training_seconds"]) < 3.0
    assert int(summary["num_steps"]) > 2
    assert float(summary["total_seconds"]) > float(summary["training_seconds"])


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--n-layer", "abc"], "'abc'"),
        (["--matrix-lr", "-1"], "'matrix_lr': -1.0"),
        (["--backend", "tpu"], "'tpu'"),
        (["--data", "/no/such/corpus.txt"], "/no/such/corpus.txt"),
    ],
)
def test_bad_flags_exit_2_naming_the_value(run_cli, flags, named):
    result = run_cli(flags)
    assert result.returncode == 2
    assert named in result.stderr and "---" not in result.stdout


def test_a_config_file_with_an_unknown_key_exits_2(run_cli, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("n_layer = 2\nlearning_rate = 0.1\n")
    result = run_cli(["--config", str(path)])
    assert result.returncode == 2 and "'learning_rate'" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_an_absent_device_exits_2(run_cli, tiny_flags):
    result = run_cli([*tiny_flags, "--backend", "cuda", "--steps", "1"])
    assert result.returncode == 2 and "'cuda'" in result.stderr


@pytest.mark.parametrize(
    "flags", [["--debug-nan-step", "3"], ["--unembedding-lr", "1e6", "--logit-softcap", "0"]]
)
def test_nan_or_exploding_loss_prints_fail_and_exits_1(run_cli, tiny_flags, flags):
    result = run_cli([*tiny_flags, "--steps", "20", *flags])
    assert result.returncode == 1
    assert any(line.startswith("FAIL") for line in result.stdout.splitlines())
    assert "val_bpb" not in result.stdout


def test_parquet_input_and_prepare_command(run_cli, tiny_flags, tmp_path):
    stories = [
        f"Once upon a time there was a fox number {i} who liked café au lait." for i in range(400)
    ]
    pq.write_table(pa.table({"story": stories}), tmp_path / "shard.parquet")
    data_flags = ["--data", str(tmp_path / "shard.parquet"), "--text-column", "story"]
    prepared = run_cli([*tiny_flags, *data_flags], module="train.prepare")
    assert prepared.returncode == 0, prepared.stderr
    assert "val_tokens:" in prepared.stdout and "eval_hash:" in prepared.stdout
    result = run_cli([*tiny_flags, *data_flags, "--steps", "5"])
    assert result.returncode == 0, result.stderr
    assert float(summary_values(result.stdout)["val_bpb"]) < 9.0


def test_mlx_backend_runs_from_the_command_line(run_cli, tiny_flags):
    result = run_cli([*tiny_flags, "--backend", "mlx", "--steps", "5"])
    assert result.returncode == 0, result.stderr
    summary = summary_values(result.stdout)
    assert summary["backend"] == "mlx" and summary["num_steps"] == "5"
    import mlx.core as mx  # the run's device, as MLX names this machine's

    assert summary["device_name"] == mx.device_info()["device_name"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_every_knob_and_exits_0(run_cli, flag):
    from dataclasses import fields

    from train.config import TrainConfig

    result = run_cli(["--seed", "3", flag])
    assert result.returncode == 0 and result.stdout.startswith("python -m train")
    assert "---" not in result.stdout  # nothing was trained
    for field in fields(TrainConfig):
        assert f"--{field.name.replace('_', '-')} " in result.stdout
