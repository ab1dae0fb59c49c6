"""Benchmark of the default CPU miniature: throughput, memory and the noise the engine sees through.

Command (about 5 minutes on 2 cores; other processes on the machine inflate the spread):

    .venv/bin/python experiments/bench_trainer.py [--budget 30] [--seeds 5] [--repeats 3]

(append `| tee /tmp/bench_trainer.txt` to keep a copy of the output).

Prints: tokens/s and peak RSS of `python -m train` with default knobs; val_bpb over `--seeds` seeds
at a `--budget`-second budget (mean, sd, min, max); val_bpb over `--repeats` runs of one seed
(timing jitter only: the steps that fit in the budget vary); and MFU = (6 * matmul params +
attention FLOPs per token) * tokens/s / the fp32 matmul FLOP/s torch reaches in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the trainer does, before torch loads

import torch  # noqa: E402

from train.config import TrainConfig  # noqa: E402
from train.flops import measure_matmul_flops  # noqa: E402
from train.torch_backend import TorchBackend  # noqa: E402


def run_trainer(budget: float, seed: int) -> dict[str, float]:
    """One `python -m train` run; its summary values plus the child's peak RSS in MiB."""
    process = subprocess.Popen(
        [sys.executable, "-m", "train", "--time-budget", str(budget), "--seed", str(seed),
         "--backend", "cpu"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"trainer exited {process.returncode}: {stdout[-500:]}")
    block = stdout.split("\n---\n")[-1]
    values = {}
    for line in block.strip().splitlines():
        key, _, value = line.partition(":")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            pass
    values["peak_rss_mb"] = usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux
    return values


def tokens_per_second(run: dict[str, float], config: TrainConfig) -> float:
    """Timed tokens / timed seconds (the untimed warm-up steps are excluded from both)."""
    return ((run["num_steps"] - config.untimed_steps) * config.tokens_per_step
            / run["training_seconds"])


def describe(name: str, values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return (f"{name}: n={len(values)} mean={statistics.mean(values):.4f} sd={sd:.4f} "
            f"min={min(values):.4f} max={max(values):.4f}  values={[round(v, 4) for v in values]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = TrainConfig()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}, "
          f"torch {torch.__version__}")
    print(f"config: depth {config.n_layer}, width {config.n_embd}, seq {config.seq_len}, "
          f"{config.tokens_per_step} tokens/step, budget {args.budget}s")

    seed_runs = [run_trainer(args.budget, seed) for seed in range(1, args.seeds + 1)]
    repeat_runs = [seed_runs[0]] + [run_trainer(args.budget, 1) for _ in range(args.repeats - 1)]
    all_runs = seed_runs + repeat_runs[1:]
    throughput = [tokens_per_second(run, config) for run in all_runs]

    print(describe("tokens_per_second", throughput))
    print(describe("peak_rss_mb", [run["peak_rss_mb"] for run in all_runs]))
    print(describe("num_steps", [run["num_steps"] for run in all_runs]))
    print(describe(f"val_bpb over {args.seeds} seeds", [run["val_bpb"] for run in seed_runs]))
    print(describe(f"val_bpb over {args.repeats} repeats of seed 1",
                   [run["val_bpb"] for run in repeat_runs]))

    torch.set_num_threads(os.cpu_count() or 1)
    model_flops_per_token = TorchBackend(config, "cpu").flops_per_token
    matmul_flops = measure_matmul_flops("cpu", torch.float32, size=512, seconds=2.0)
    achieved = model_flops_per_token * statistics.mean(throughput)
    print(f"flops_per_token: {model_flops_per_token:.4g} (6 * matmul params + attention)")
    print(f"matmul_flops_per_second: {matmul_flops:.4g} "
          f"(fp32 512x512, {torch.get_num_threads()} threads)")
    print(f"mfu_percent: {100 * achieved / matmul_flops:.2f}")


if __name__ == "__main__":
    main()
