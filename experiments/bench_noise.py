"""The trainer's noise, and how much of it two configs share on one seed.

    python experiments/bench_noise.py [--seeds 8] [--steps 40] [--time-budget 8]
                                      [--trainer-root DIR]

Over K seeds it runs the quickstart's base config and one change per category (the first
hypothesis of each category in experiments/quickstart.toml), in fixed-step mode and in timed mode,
and prints per change: the sd of its runs, the sd of the paired differences (change minus base on
the same seed), the sd of unpaired differences (against the base on the next seed), and the
same-seed correlation of change and base. `--trainer-root` runs the `train` package of another
checkout (e.g. a worktree of an older commit), to measure before and after a change to it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def val_bpb(root: Path, config: dict, seed: int, budget: list[str]) -> float:
    """One trainer run's val_bpb (nan when it failed)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
    argv = [sys.executable, "-m", "train", "--config", handle.name, "--seed", str(seed),
            "--backend", "cpu", *budget]
    result = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600)
    Path(handle.name).unlink()
    summary = result.stdout.rsplit("---", 1)[-1]
    values = dict(line.split(": ", 1) for line in summary.strip().splitlines() if ": " in line)
    return float(values["val_bpb"]) if result.returncode == 0 and "val_bpb" in values else np.nan


def table(base: np.ndarray, runs: dict[str, np.ndarray]) -> list[str]:
    lines = ["| change | sd of runs | sd of paired differences | sd of unpaired differences "
             "| same-seed correlation |", "|---|---|---|---|---|",
             f"| (base) | {np.nanstd(base, ddof=1):.4f} | — | — | — |"]
    for name, values in runs.items():
        paired = values - base
        unpaired = values - np.roll(base, -1)
        correlation = np.corrcoef(values, base)[0, 1]
        lines.append(f"| {name} | {np.nanstd(values, ddof=1):.4f} | "
                     f"{np.nanstd(paired, ddof=1):.4f} | {np.nanstd(unpaired, ddof=1):.4f} | "
                     f"{correlation:+.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--time-budget", type=float, default=8.0)
    parser.add_argument("--trainer-root", type=Path, default=REPO)
    args = parser.parse_args(argv)
    quickstart = tomllib.loads((REPO / "experiments" / "quickstart.toml").read_text())
    base = dict(quickstart["env"]["base"])
    changes: dict[str, dict] = {}
    for hypothesis in quickstart["hypotheses"]:
        if hypothesis["category"] not in {h.get("category") for h in changes.values()}:
            changes[hypothesis["name"]] = hypothesis
    started = time.monotonic()
    for mode, budget in (("fixed steps", ["--steps", str(args.steps)]),
                         ("timed", ["--time-budget", str(args.time_budget)])):
        runs = {name: np.full(args.seeds, np.nan) for name in ["base", *changes]}
        for i, seed in enumerate(range(1, args.seeds + 1)):
            for name in runs:
                config = {**base, **(changes[name]["change"] if name != "base" else {})}
                runs[name][i] = val_bpb(args.trainer_root, config, seed, budget)
                print(f"{mode}, seed {seed}, {name}: {runs[name][i]:.4f}", file=sys.stderr,
                      flush=True)
        budget_text = f"--steps {args.steps}" if mode == "fixed steps" else \
            f"--time-budget {args.time_budget:g}"
        print(f"\n{mode} ({budget_text}), {args.seeds} seeds, trainer {args.trainer_root}:\n")
        print("\n".join(table(runs.pop("base"), runs)))
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
