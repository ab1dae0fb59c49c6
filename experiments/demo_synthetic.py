"""The engine against the vanilla ratchet on one known world, in about a minute.

    python experiments/demo_synthetic.py [--seeds N]

Both get the same budget of runs on the world of experiments/demo_synthetic.toml (its seed);
the table shows what each kept and each kept change's true effect (negative = better, a
non-negative one is a false keep), and the true gain as a share of the best reachable. One
seed is one draw of luck, so the same is then run on N other worlds of the family (world and
study seeds 1..N) and their mean printed beside it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import tomllib
from pathlib import Path

from engine.config import parse_config
from engine.study import Study
from engine.truth import Truth, gains

CONFIG = Path(__file__).with_name("demo_synthetic.toml")
POLICIES = ("design", "ratchet")


def run(policy: str, seed: int, out: Path) -> tuple[Study, float, list[str]]:
    """One study of the demo world at `seed` under `policy`: (the study, its true gain as a
    share of the best reachable, its false keeps)."""
    raw = tomllib.loads(CONFIG.read_text())
    raw["study"] |= {"seed": seed, "out_dir": str(out / f"{policy}-{seed}")}
    raw["env"]["world_seed"] = seed
    raw["policy"] = {"kind": policy}
    study = Study(parse_config(raw, source=str(CONFIG)))
    study.run(write_report=False)
    truth = Truth(study, reeval_runs=0, seed=seed)
    gain, best = gains(study, truth, study.incumbent)
    effects = study.env.true_effects()
    false_keeps = [name for name in study.kept if study.sign * -effects[name] <= 0]
    return study, gain / best if best else 0.0, false_keeps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="other worlds to average over")
    args = parser.parse_args(argv)
    seed = tomllib.loads(CONFIG.read_text())["study"]["seed"]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        print(f"World {seed} of {CONFIG.name}: the same budget for each policy\n")
        print(f"{'policy':<9} {'runs':>4}  {'gain/best':>9}  kept (true effect)")
        for policy in POLICIES:
            study, share, false_keeps = run(policy, seed, out)
            effects = study.env.true_effects()
            kept = ", ".join(f"{name} ({effects[name]:+.3f})" for name in study.kept)
            print(f"{policy:<9} {study.runs_used:>4}  {share:>9.2f}  {kept or 'nothing'}"
                  + (f"  false keeps: {', '.join(false_keeps)}" if false_keeps else ""))
        print(f"\nOver worlds 1..{args.seeds} of the family (mean gain/best, false keeps of "
              "all keeps):")
        for policy in POLICIES:
            shares, keeps, false = [], 0, 0
            for other in range(1, args.seeds + 1):
                study, share, false_keeps = run(policy, other, out)
                shares.append(share)
                keeps += len(study.kept)
                false += len(false_keeps)
            print(f"{policy:<9} gain/best {sum(shares) / len(shares):.2f}  "
                  f"false keeps {false} of {keeps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
