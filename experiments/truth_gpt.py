"""The true effect of every trainer hypothesis in a pool, on seeds no study uses.

    python experiments/truth_gpt.py [--pool experiments/truth_gpt_cpu.toml] [--seeds 16]
                                    [--cache bench_out/truth_gpt/runs.jsonl] [--workers 2]

The pool is a study config (its [env] and [[hypotheses]]). Each hypothesis runs alone on the
base, at every truth seed, and so does the base; the runs are fixed-step (deterministic per
seed), so a change's effect at a seed is its paired difference with the base there; `--workers`
runs go at once (a run of the miniature keeps about one core of two busy). Every run is appended
to the cache as it finishes, so the script stops and resumes where it left off (a failed run is
run again on resume). It writes the table beside the pool (same stem, .json) and prints it as
markdown.

A hypothesis is labelled "helps" or "hurts" only where the 95% t interval of its mean paired
difference excludes 0, else "unclear"; the benchmark counts false keeps of labelled hypotheses
only (engine/bench.py, a world's `truth_table`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.config import parse_config  # noqa: E402
from engine.proposer import Hypothesis  # noqa: E402
from envs import make_env  # noqa: E402

# Far from every study's panel (offsets below 2**30) and from the bench's re-measurement seeds
# (random below 2**31 - 1, a collision has odds of about 1e-8 per seed).
TRUTH_SEED_START = 2_000_000_000


def truth_seeds(n: int) -> list[int]:
    return [TRUTH_SEED_START + i for i in range(n)]


def load_cache(path: Path) -> dict[tuple[str, int], float | None]:
    """(config name, seed) -> val_bpb (None for a failed run), from the cache's lines."""
    if not path.exists():
        return {}
    cached = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            cached[(record["config"], record["seed"])] = record["value"]
    return cached


def label_of(lo: float, hi: float, sign: float) -> str:
    """'helps' / 'hurts' where the 95% interval of (change - base), on the internal
    lower-is-better scale sign * metric, lies wholly below / above 0; else 'unclear'."""
    lo, hi = sorted((sign * lo, sign * hi))
    return "helps" if hi < 0 else "hurts" if lo > 0 else "unclear"


def summarise(names: list[str], seeds: list[int], values: dict[tuple[str, int], float | None],
              sign: float) -> dict[str, dict]:
    """Per hypothesis: the mean paired difference (change - base, metric units), its sd over
    seeds, the 95% t interval, the seeds it had, and its label."""
    table = {}
    for name in names:
        diffs = np.array([values[(name, s)] - values[("base", s)] for s in seeds
                          if values.get((name, s)) is not None
                          and values.get(("base", s)) is not None])
        n = len(diffs)
        mean = float(diffs.mean()) if n else float("nan")
        sd = float(diffs.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
        table[name] = {"effect": mean, "sd_paired": sd, "lo": mean - half, "hi": mean + half,
                       "n_seeds": n, "label": label_of(mean - half, mean + half, sign)
                       if n > 1 else "unclear"}
    return table


def markdown(table: dict[str, dict], hypotheses: dict, base_values: list[float],
             noise_sd: float) -> list[str]:
    lines = [f"base: mean {np.mean(base_values):.4f}, sd over seeds {noise_sd:.4f} "
             f"({len(base_values)} seeds)", "",
             "| hypothesis | category | effect | 95% interval | effect / noise sd | "
             "sd of paired differences | label |", "|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        lines.append(f"| {name} | {hypotheses[name].category} | {row['effect']:+.4f} | "
                     f"[{row['lo']:+.4f}, {row['hi']:+.4f}] | {row['effect'] / noise_sd:+.2f} | "
                     f"{row['sd_paired']:.4f} | {row['label']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=Path, default=REPO / "experiments" / "truth_gpt_cpu.toml")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=REPO / "bench_out" / "truth_gpt" /
                        "runs.jsonl")
    args = parser.parse_args(argv)
    cfg = parse_config(tomllib.loads(args.pool.read_text()), source=str(args.pool))
    env = make_env(cfg.env, base_dir=args.pool.parent)
    specs = cfg.hypotheses or [Hypothesis(h["name"], h["category"], dict(h["change"]))
                               for h in env.hypotheses() or []]  # a synthetic world's own
    hypotheses = {h.name: h for h in specs}
    sign = 1.0 if cfg.env["direction"] == "lower" else -1.0
    base = dict(cfg.env.get("base", {}))
    configs = {"base": base, **{name: {**base, **h.change} for name, h in hypotheses.items()}}
    seeds = truth_seeds(args.seeds)
    values = load_cache(args.cache)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    # a failed run is tried again: an interrupted script leaves its runs in flight as crashes
    todo = [(name, s) for s in seeds for name in configs if values.get((name, s)) is None]
    print(f"{len(values)} runs cached, {len(todo)} to run", file=sys.stderr, flush=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        pending = {pool.submit(env.run, configs[name], seed): (name, seed) for name, seed in todo}
        for done, future in enumerate(as_completed(pending), 1):
            (name, seed), outcome = pending[future], future.result()
            values[(name, seed)] = outcome.metric if outcome.status == "ok" else None
            with args.cache.open("a") as handle:
                handle.write(json.dumps({"config": name, "seed": seed,
                                         "value": values[(name, seed)],
                                         "status": outcome.status}) + "\n")
            eta = (time.monotonic() - started) / done * (len(todo) - done)
            print(f"[{done}/{len(todo)}] seed {seed} {name}: {outcome.status} "
                  f"{values[(name, seed)]} (ETA {eta / 60:.0f} min)", file=sys.stderr, flush=True)
    base_values = [values[("base", s)] for s in seeds if values.get(("base", s)) is not None]
    noise_sd = float(np.std(base_values, ddof=1))
    table = summarise(list(hypotheses), seeds, values, sign)
    out = args.pool.with_suffix(".json")
    out.write_text(json.dumps({
        "command": "python experiments/truth_gpt.py",
        "pool": args.pool.name, "env": cfg.env, "seeds": seeds,
        "code_hash": getattr(env, "code_hash", None),
        "base": {"mean": float(np.mean(base_values)), "sd": noise_sd, "n_seeds": len(base_values)},
        "hypotheses": {name: {"category": hypotheses[name].category,
                              "change": hypotheses[name].change, **row}
                       for name, row in table.items()},
        # every run, so the bench can reuse them where the trainer's code is the same
        "runs": {name: {str(s): values.get((name, s)) for s in seeds} for name in configs},
    }, indent=1) + "\n")
    print("\n".join(markdown(table, hypotheses, base_values, noise_sd)))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
