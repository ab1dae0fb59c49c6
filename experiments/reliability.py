"""Is P(better) calibrated? A reliability table over every decision a synthetic bench made.

    python experiments/reliability.py BENCH.toml BENCH_OUT [--policies design voi ...]

Reads the study folders a finished `python -m engine.bench BENCH.toml --out BENCH_OUT` left
behind, replays each engine study's decisions in order (the incumbent grows with each keep), and
asks the synthetic world's truth whether each judged move was better than the incumbent it was
judged against. Every look counts, undecided ones too: each is a posterior probability about the
truth. Prints, per bin of claimed P(better), the decisions, the mean claim, the observed share
that were better, and its 95% binomial band around the mean claim (Wilson); a bin whose observed
share falls outside the band is marked. Looks at one move are not independent, so the band is
narrower than it should be: a miss is a warning, a pass is not proof.

Beside it, per world: the share of exact nulls the final posterior learnt (E[pi0 | data]), the
true share of exact nulls, and the true share of changes that bring no gain (nulls and harms).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from beliefs.spike import NULL_SHARE_GRID
from engine.baselines import BASELINES
from engine.bench_config import load_bench, study_config
from engine.study import Study
from engine.truth import Truth
from policies.types import move_members

EDGES = np.array([0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0 + 1e-12])
Z = 1.959964  # the two-sided 95% normal quantile


def wilson_band(p: float, n: int) -> tuple[float, float]:
    """The 95% range of an observed share of n Bernoulli(p) draws (Wilson's score interval
    around p, read as where the share should fall if p is right)."""
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def judged_looks(study: Study, truth: Truth) -> list[tuple[float, bool]]:
    """(claimed P(better), truly better) for every judged decision of the study, in order."""
    applied: frozenset[str] = frozenset()
    looks = []
    for d in study.ledger.decisions(study.study_id):
        if d["p_better"] is not None:
            members = move_members(d["hypothesis"])
            better = study.sign * (truth(applied | members) - truth(applied)) < 0
            looks.append((float(d["p_better"]), bool(better)))
        if d["verdict"] == "keep":
            applied = applied | move_members(d["hypothesis"])
    return looks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--policies", nargs="*", help="default: every engine policy benched")
    args = parser.parse_args(argv)
    data = load_bench(args.bench)
    bench = data["bench"]
    policies = args.policies or [p for p in bench["policies"]
                                 if p not in BASELINES and p != "ratchet"]
    first = bench.get("first_seed", 0)
    looks: list[tuple[float, bool]] = []
    shares: dict[str, list[tuple[float, float, float]]] = {}
    for world in data["worlds"]:
        for policy in policies:
            for seed in range(first, first + bench["seeds"]):
                cfg = study_config(data, world, policy, seed, args.out, args.bench)
                if not (Path(cfg.study.out_dir) / "study.db").exists():
                    continue
                study = Study(cfg)
                looks += judged_looks(study, Truth(study, 0, seed))
                effects = np.array(list(study.env.true_effects().values()))
                learnt = float(study.state.beliefs.null_share() @ NULL_SHARE_GRID)
                shares.setdefault(world["name"], []).append(
                    (learnt, float(np.mean(effects == 0)),
                     float(np.mean(study.sign * effects >= 0))))
    claims = np.array([p for p, _ in looks])
    better = np.array([b for _, b in looks])
    print(f"{len(looks)} judged decisions, policies {', '.join(policies)}, "
          f"worlds {', '.join(w['name'] for w in data['worlds'])}\n")
    print("| claimed P(better) | decisions | mean claim | observed better | 95% band | |")
    print("|---|---|---|---|---|---|")
    for lo, hi in zip(EDGES[:-1], EDGES[1:]):
        in_bin = (claims >= lo) & (claims < hi)
        n = int(in_bin.sum())
        if n == 0:
            continue
        claim, observed = float(claims[in_bin].mean()), float(better[in_bin].mean())
        low, high = wilson_band(claim, n)
        mark = "" if low <= observed <= high else "OUTSIDE"
        print(f"| [{lo:.2f}, {min(hi, 1.0):.2f}) | {n} | {claim:.3f} | {observed:.3f} | "
              f"[{low:.3f}, {high:.3f}] | {mark} |")
    print("\n| world | learnt share of exact nulls | true share of exact nulls "
          "| true share without gain |")
    print("|---|---|---|---|")
    for name, rows in shares.items():
        learnt, null, no_gain = np.mean(rows, axis=0)
        print(f"| {name} | {learnt:.2f} | {null:.2f} | {no_gain:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
