"""Re-measure a finished study: its base config and its final incumbent, run again on fresh
seeds that no study used (the same seeds for both, so the seed luck is shared), side by side.

    python experiments/remeasure.py CONFIG.toml [--out STUDY_DIR] [--runs 4]

Prints each run, the two means and the paired difference with its standard error, in the
metric's units (positive gain = the incumbent is better). The seeds are the ones the bench's
re-measurement (`engine.truth.Truth`) uses, so the figure is the one a bench would report.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from engine.config import load_config
from engine.study import Study
from engine.truth import REEVAL_STREAM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--out", help="the study folder (default: the config's out_dir)")
    parser.add_argument("--runs", type=int, default=4, help="fresh runs of each config")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, out_dir=args.out)
    study = Study(cfg)
    if not study.kept:
        print(f"{cfg.study.name} kept nothing: its incumbent is the base config")
        return 0
    seeds = np.random.default_rng([cfg.study.seed, REEVAL_STREAM]).integers(2**31 - 1,
                                                                           size=args.runs)
    base, incumbent = [], []
    for seed in seeds:  # one pair per seed, so the printout shows the pairing Truth uses
        for values, applied in ((base, frozenset()), (incumbent, study.incumbent)):
            outcome = study.env.run(study.config_for(applied), int(seed))
            values.append(outcome.metric if outcome.status == "ok" else float("nan"))
        print(f"seed {seed}: base {base[-1]:.4f}  incumbent {incumbent[-1]:.4f}", flush=True)
    difference = study.sign * (np.array(base) - np.array(incumbent))
    ok = difference[np.isfinite(difference)]
    se = float(np.std(ok, ddof=1) / math.sqrt(len(ok))) if len(ok) > 1 else float("nan")
    print(f"kept: {', '.join(study.kept)}")
    print(f"base mean {np.nanmean(base):.4f}, incumbent mean {np.nanmean(incumbent):.4f} "
          f"({len(ok)} paired runs)")
    print(f"measured gain {float(np.mean(ok)):+.4f} (standard error {se:.4f}), metric units")
    return 0


if __name__ == "__main__":
    sys.exit(main())
