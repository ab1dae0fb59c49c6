"""Fleet scaling: the default policy on 1, 2, 4, 8 and 16 workers, on a simulated clock, beside
autoresearch's ratchet run the way a parallel fork runs it.

    python experiments/bench_fleet.py experiments/bench_synthetic.toml --seeds 40

Every study of a world gets the same budget of runs on the same seeds (world_seed follows the
seed, as in engine.bench). Runs take the seconds the synthetic env reports (1 s) times a
log-normal spread (`--spread`, the sd of the log), on the simulated runner ([runner] kind =
"simulated"): nothing sleeps, and a W-worker study's runs finish in the order W machines would
finish them. The engine's choices do not depend on that order (engine.core), only its times do.

The ratchet fork: one base run, then every free worker tries one random change the global best
lacks on top of the global best as it is when the worker starts, at a fresh seed; a result better
than the global best's value becomes the global best (its configuration, whatever other workers
kept meanwhile), as parallel forks of autoresearch's loop do.

Printed per world and worker count: the mean true gain at the end (metric units, positive =
better than the base), the simulated time at which the mean gain curve first reaches 90% of the
1-worker engine's final mean gain ("—" where it never does), that time as a share of the
1-worker time, the time the budget's last run finishes, and the share of the final
configurations' changes whose removal loses no true gain (pooled over seeds, with a 95% Wilson
interval). A bar chart of those times goes to fleet.png when --plot is given.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.baselines import verdicts_without_gain  # noqa: E402
from engine.bench_config import load_bench, study_config  # noqa: E402
from engine.sections import RunnerSection  # noqa: E402
from engine.truth import Truth  # noqa: E402

POLICY = "design"
RATCHET_STREAM = 13  # the fork's choices: default_rng([seed, workers, RATCHET_STREAM])


@dataclasses.dataclass(frozen=True)
class Curve:
    """One study's true gain over simulated time: after each time in `times`, `gains`."""

    world: str
    who: str  # "engine" | "ratchet-fork"
    workers: int
    seed: int
    times: tuple[float, ...]
    gains: tuple[float, ...]
    changes: int  # of the final configuration
    without_gain: int  # of those, changes whose removal loses no true gain
    makespan: float  # when the last run finished


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial share."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def engine_curve(data: dict, world: dict, seed: int, workers: int, spread: float,
                 out_dir: Path, source: Path) -> Curve:
    """Run the study on `workers` simulated workers and read its gain curve from the ledger:
    a step concludes when its last run and every earlier step's have finished."""
    from engine.study import Study

    cfg = study_config(data, world, POLICY, seed, out_dir / f"w{workers}", source)
    cfg = dataclasses.replace(cfg, runner=RunnerSection(kind="simulated", workers=workers,
                                                        spread=spread))
    study = Study(cfg)
    if study.run(write_report=False).status != "finished":
        raise KeyboardInterrupt(f"{world['name']} seed {seed} on {workers} workers stopped")
    truth = Truth(study, 0, seed)
    base = truth(frozenset())
    finish_by_step: dict[int, float] = {}
    for row in study.ledger.runs(study.study_id):
        finish = row["extra"]["simulated"]["finish"]
        finish_by_step[row["step"]] = max(finish_by_step.get(row["step"], 0.0), finish)
    times, gains, reached = [0.0], [0.0], 0.0
    for row in study.ledger.steps(study.study_id):
        reached = max(reached, finish_by_step.get(row["step"], reached))
        kept = frozenset(row["incumbent"]["kept"])
        times.append(reached)
        gains.append(study.sign * (base - truth(kept)))
    names = list(study.hypotheses)
    without = verdicts_without_gain(study.incumbent, names, truth.no_gain)[0]
    return Curve(world["name"], "engine", workers, seed, tuple(times), tuple(gains),
                 len(study.incumbent), without, max(finish_by_step.values()))


def ratchet_fork_curve(data: dict, world: dict, seed: int, workers: int, spread: float,
                       out_dir: Path, source: Path) -> Curve:
    """The ratchet as parallel forks run it, on the same env and budget (module docstring)."""
    from engine.study import Study

    cfg = study_config(data, world, "ratchet", seed, out_dir / f"fork{workers}", source)
    study = Study(cfg)
    truth = Truth(study, 0, seed)
    names = list(study.hypotheses)
    rng = np.random.default_rng([seed, workers, RATCHET_STREAM])
    budget, sign = cfg.study.budget_trials, study.sign

    def run(applied: frozenset[str], run_seed: int) -> tuple[float | None, float]:
        outcome = study.env.run(study.config_for(applied), run_seed)
        z = np.random.default_rng([run_seed, RATCHET_STREAM]).standard_normal()
        value = outcome.metric if outcome.status == "ok" else None
        return (None if value is None else sign * value), outcome.seconds * math.exp(spread * z)

    base_value, first = run(frozenset(), seed * 100_000)
    best, best_value = frozenset(), base_value
    base_truth = truth(frozenset())
    times, gains = [0.0, first], [0.0, 0.0]
    running: list[tuple[float, int, frozenset[str], float | None]] = []
    clock, made = first, 1
    free = workers
    while made < budget or running:
        while free and made < budget:
            open_changes = [n for n in names if n not in best]
            if not open_changes:
                break
            trial = best | {open_changes[int(rng.integers(len(open_changes)))]}
            value, seconds = run(trial, seed * 100_000 + made)
            running.append((clock + seconds, made, trial, value))
            made, free = made + 1, free - 1
        if not running:
            break
        running.sort()
        clock, _, trial, value = running.pop(0)
        free += 1
        if value is not None and (best_value is None or value < best_value):
            best, best_value = trial, value
            times.append(clock)
            gains.append(sign * (base_truth - truth(best)))
    without = verdicts_without_gain(best, names, truth.no_gain)[0]
    return Curve(world["name"], "ratchet-fork", workers, seed, tuple(times), tuple(gains),
                 len(best), without, clock)


def study_curves(data, world, seed, workers, spread, out_dir, source) -> list[Curve]:
    folder = out_dir / "studies" / world["name"] / f"seed{seed}"
    return [engine_curve(data, world, seed, workers, spread, folder, source),
            ratchet_fork_curve(data, world, seed, workers, spread, folder, source)]


def mean_gain_at(curves: list[Curve], t: float) -> float:
    """The mean over studies of each one's gain at simulated time t (a step function)."""
    values = []
    for curve in curves:
        index = int(np.searchsorted(curve.times, t, side="right")) - 1
        values.append(curve.gains[max(index, 0)])
    return float(np.mean(values))


def time_to(curves: list[Curve], target: float) -> float | None:
    """The first simulated time at which the mean gain curve reaches `target`."""
    for t in sorted({t for curve in curves for t in curve.times}):
        if mean_gain_at(curves, t) >= target:
            return t
    return None


def summarise(curves: list[Curve], worker_counts: list[int]) -> list[dict]:
    rows = []
    for world in sorted({c.world for c in curves}):
        ones = [c for c in curves if c.world == world and c.who == "engine" and c.workers == 1]
        reference = float(np.mean([c.gains[-1] for c in ones]))
        one_time = time_to(ones, 0.9 * reference) if reference > 0 else None
        for who in ("engine", "ratchet-fork"):
            for workers in worker_counts:
                group = [c for c in curves
                         if (c.world, c.who, c.workers) == (world, who, workers)]
                to_90 = time_to(group, 0.9 * reference) if reference > 0 else None
                changes = sum(c.changes for c in group)
                without = sum(c.without_gain for c in group)
                rows.append({
                    "world": world, "who": who, "workers": workers, "studies": len(group),
                    "final_gain": float(np.mean([c.gains[-1] for c in group])),
                    "reference_gain": reference, "time_to_90": to_90,
                    "time_share": (None if to_90 is None or not one_time else to_90 / one_time),
                    "makespan": float(np.mean([c.makespan for c in group])),
                    "changes": changes, "without_gain": without,
                    "without_share": without / changes if changes else None,
                    "without_interval": wilson(without, changes)})
    return rows


def render(rows: list[dict], seeds: range, spread: float, elapsed: float) -> str:
    def number(value, fmt):
        return "—" if value is None else format(value, fmt)

    lines = [f"# Fleet scaling (seeds {seeds.start}-{seeds.stop - 1}, run-time spread {spread}, "
             f"{elapsed:.0f} s)", "",
             "Time to 90% = simulated seconds until the mean gain first reaches 90% of the "
             "1-worker engine's final mean gain; share = that over the 1-worker engine's.", "",
             "| world | who | workers | final gain | time to 90% | share of 1-worker time | "
             "budget spent at | changes without gain |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["without_interval"]
        share = ("—" if r["without_share"] is None else
                 f"{r['without_share']:.1%} [{lo:.0%}, {hi:.0%}] of {r['changes']}")
        lines.append(f"| {r['world']} | {r['who']} | {r['workers']} | {r['final_gain']:+.3f} | "
                     f"{number(r['time_to_90'], '.1f')} | {number(r['time_share'], '.2f')} | "
                     f"{r['makespan']:.1f} | {share} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], width: int = 40) -> str:
    """A text plot: per world, each worker count's engine time to 90% as a bar of its share of
    the 1-worker time (a README can hold it; "never" where the curve never gets there)."""
    lines = ["time to 90% of the 1-worker final gain, as a share of the 1-worker time "
             "(engine; | marks 1/workers, perfect scaling)", ""]
    for world in sorted({r["world"] for r in rows}):
        lines.append(world)
        for r in (r for r in rows if r["world"] == world and r["who"] == "engine"):
            if r["time_share"] is None:
                bar = (f"never (final gain {r['final_gain']:+.3f} "
                       f"of {r['reference_gain']:+.3f})")
            else:
                cells = ["#"] * max(1, round(min(r["time_share"], 1.5) * width))
                ideal = round(width / r["workers"])
                cells += [" "] * max(0, ideal + 1 - len(cells))
                cells[min(ideal, len(cells) - 1)] = "|"
                bar = "".join(cells) + f" {r['time_share']:.2f}"
            lines.append(f"  {r['workers']:>2} workers {bar}")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = sorted({r["world"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for who, style in (("engine", "-o"), ("ratchet-fork", "--s")):
        for world in worlds:
            group = [r for r in rows if r["world"] == world and r["who"] == who]
            counts = [r["workers"] for r in group]
            axes[0].plot(counts, [np.nan if r["time_share"] is None else r["time_share"]
                                  for r in group], style, label=f"{world} ({who})")
            axes[1].plot(counts, [r["final_gain"] / r["reference_gain"]
                                  if r["reference_gain"] > 0 else np.nan for r in group],
                         style)
    for axis, label in ((axes[0], "time to 90% / 1-worker engine's"),
                        (axes[1], "final gain / 1-worker engine's")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("workers")
        axis.set_ylabel(label)
    axes[0].plot([1, 16], [1, 1 / 16], ":", color="grey", label="perfect scaling")
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", nargs="?", default=str(ROOT / "experiments/bench_synthetic.toml"))
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--worlds", nargs="+", help="only these worlds (by name)")
    parser.add_argument("--spread", type=float, default=0.5)
    parser.add_argument("--jobs", type=int, default=2, help="studies run at once")
    parser.add_argument("--out", default="bench_out/fleet")
    parser.add_argument("--plot", action="store_true", help="write fleet.png")
    parser.add_argument("--chart", metavar="FLEET_JSON",
                        help="print the text plot of an earlier run's fleet.json and exit")
    args = parser.parse_args(argv)
    if args.chart:
        print(chart(json.loads(Path(args.chart).read_text())["rows"]))
        return 0
    if 1 not in args.workers:
        parser.error("--workers must include 1: the times are shares of the 1-worker time")
    source = Path(args.bench)
    data = load_bench(source)
    worlds = [w for w in data["worlds"] if not args.worlds or w["name"] in args.worlds]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    out_dir = Path(args.out)
    shutil.rmtree(out_dir / "studies", ignore_errors=True)
    jobs = [(w, s, k) for w in worlds for s in seeds for k in args.workers]
    started = time.monotonic()
    curves: list[Curve] = []
    with futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        pending = [pool.submit(study_curves, data, w, s, k, args.spread, out_dir, source)
                   for w, s, k in jobs]
        for done, future in enumerate(futures.as_completed(pending), 1):
            engine, fork = future.result()
            curves += [engine, fork]
            print(f"[{done}/{len(jobs)}] {engine.world} seed {engine.seed} x{engine.workers}: "
                  f"gain {engine.gains[-1]:+.3f} at {engine.makespan:.1f} s "
                  f"(fork {fork.gains[-1]:+.3f} at {fork.makespan:.1f} s)",
                  file=sys.stderr, flush=True)
    rows = summarise(curves, sorted(args.workers))
    markdown = render(rows, seeds, args.spread, time.monotonic() - started) + "\n" + chart(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fleet.md").write_text(markdown)
    (out_dir / "fleet.json").write_text(json.dumps(
        {"rows": rows, "curves": [dataclasses.asdict(c) for c in curves]}, indent=1))
    if args.plot:
        plot(rows, out_dir / "fleet.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
