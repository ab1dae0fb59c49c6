"""What a code patch costs a run: a patched run (working copy, confined training, the judge's
two model servers) against an unpatched one, side by side, on the same tiny trainer config.

    python experiments/bench_patched_run.py [--seeds 3] [--steps 30]

The patch only adds a comment, so both runs make the same weights: the script also checks that
their val_bpb agree at every seed (the judge's evaluation is the trainer's own).
"""
from __future__ import annotations

import argparse
import time

from envs.gpt import GptEnv
from envs.patch import diff_between
from envs.patched import pristine_sources

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2, "seq_len": 64, "batch_size": 8,
        "eval_seq_len": 64, "eval_tokens": 4096, "threads": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    env = GptEnv(backend="cpu", steps=args.steps, base=TINY)
    before = pristine_sources()
    after = dict(before)
    after["train/model.py"] = after["train/model.py"].replace(
        "class MLP(nn.Module):", "# a comment\nclass MLP(nn.Module):", 1)
    note = diff_between(before, after)
    plain, patched = [], []
    for seed in range(1, args.seeds + 1):
        started = time.perf_counter()
        unpatched_run = env.run(dict(TINY), seed)
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        patched_run = env.run({**TINY, "patches": [note]}, seed)
        patched.append(time.perf_counter() - started)
        agree = unpatched_run.metric == patched_run.metric
        print(f"seed {seed}: unpatched {plain[-1]:.2f} s val_bpb {unpatched_run.metric}, "
              f"patched {patched[-1]:.2f} s val_bpb {patched_run.metric} "
              f"({'equal' if agree else 'DIFFERENT'}; {patched_run.extra.get('confinement')})")
    print(f"mean: unpatched {sum(plain) / len(plain):.2f} s, patched "
          f"{sum(patched) / len(patched):.2f} s, ratio {sum(patched) / sum(plain):.2f}")


if __name__ == "__main__":
    main()
