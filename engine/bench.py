"""Benchmark policies against each other on the same env, seeds and budget of runs.

    python -m engine.bench BENCH.toml [--out DIR] [--seeds N] [--first-seed K]
                           [--budget-trials N] [--workers N] [--resume]

A bench file holds `[bench]` (seeds, first_seed, budget_trials, policies, default_policy,
reeval_runs, workers, out_dir, false_keep_target), `[defaults]` (study config sections applied
to every study), one or more `[[worlds]]` (a name and an `[worlds.env]` table, plus optional
section overrides; or `config = "FILE.toml"`, a study config whose sections the world takes)
and optional `[variants.NAME]` tables: a named variant of a policy, its own study
config sections applied last (`[variants.NAME.policy] kind` names the policy), listed in
`policies` by NAME like a policy (an ablation, or a keep threshold of a curve). Every
(world, policy, seed) is a full study in its own folder. Where the env knows
its truth (synthetic worlds, a command env with `truth_command`) gains are true gains. A world
with a `truth_table` (a JSON file written by experiments/truth_gpt.py, beside the bench file)
judges each keep by the table's label of the change (helps / hurts; an "unclear" one is left out
of the false-keep count), and measures a configuration's value as its mean over the first
`reeval_runs` of the table's seeds, paired with the base there. Otherwise the base and each final
incumbent are re-run `reeval_runs` times on fresh seeds and their mean is used.

Outputs: bench.md (tables with bootstrap 95% intervals over seeds), bench.json (every study's
numbers, its final configuration among them) and bench.png. `--resume` keeps the study folders
of an earlier, interrupted bench: each study resumes where it stopped (its wall time is then
the resumed part's). The tables print what was measured, including where the engine loses.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.baselines import BASELINES, best_subset, verdicts_without_gain
from engine.bench_config import load_bench, policy_kind, study_config
from engine.bench_report import plot, render_markdown
from engine.config import ConfigError
from engine.summary import claimed_without_gain
from engine.truth import Truth, gains, truth_table
from envs import make_env
from policies.types import move_members

BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class StudyScore:
    world: str
    policy: str
    seed: int
    gain: float            # metric units, positive = better than the base
    best_gain: float | None  # the best reachable gain where the truth is known
    keeps: int                  # keep decisions (a kept pair move is one)
    claimed_false_keeps: float | None  # sum of 1 - P(better) over the keeps: what the model expects
    false_keeps: int | None     # keeps whose true effect, where they were kept, is no gain
    null_decisions: int | None  # final verdicts on changes whose true effect there is no gain
    # (both None where the truth is only re-measured: every decision would cost re-runs)
    runs_used: int
    wall_seconds: float
    truth_source: str      # "truth" | "table" | "reeval"
    # The final configuration, judged change by change as for every policy alike: its changes,
    # those whose removal loses no true gain, and how many of those the model expected
    # (sum over its changes of P(removing it loses nothing)); None where unmeasured or unclaimed.
    kept_changes: int = 0
    changes_without_gain: int | None = None
    claimed_changes_without_gain: float | None = None
    judged_keeps: int | None = None  # keeps whose truth is known: the false-keep rate's base
    final: tuple[str, ...] = ()  # the final configuration's changes, sorted


def run_one(
    data: dict, world: dict, policy: str, seed: int, out_dir: Path, source: Path
) -> StudyScore:
    from engine.study import Study

    cfg = study_config(data, world, policy, seed, out_dir, source)
    started = time.monotonic()
    study = Study(cfg)
    truth = Truth(study, data["bench"].get("reeval_runs", 0), seed,
                  truth_table(world, source, cfg.env, study.hypotheses.values()))
    if policy in BASELINES:
        return run_baseline(study, truth, world, policy, seed, started)
    # Ctrl-C or SIGTERM: a half study is no score
    if study.run(write_report=False).status == "stopped":
        raise KeyboardInterrupt(f"{world['name']} {policy} seed {seed} was interrupted")
    wall = time.monotonic() - started
    judged = truth.source != "reeval"
    false_keeps = null_decisions = judged_keeps = 0 if judged else None
    kept = [d for d in study.ledger.decisions(study.study_id) if d["verdict"] == "keep"]
    claimed = (None if any(d["p_better"] is None for d in kept)
               else float(sum(1 - d["p_better"] for d in kept)))
    applied: frozenset[str] = frozenset()
    for d in study.ledger.decisions(study.study_id) if judged else ():
        if d["verdict"] == "undecided":  # replayed in order: the incumbent grows with each keep
            continue
        members = move_members(d["hypothesis"])
        no_gain = truth.no_gain(applied, members)
        if no_gain is not None:
            null_decisions += no_gain
            false_keeps += no_gain and d["verdict"] == "keep"
            judged_keeps += d["verdict"] == "keep"
        if d["verdict"] == "keep":
            applied = applied | members
    names = list(study.hypotheses)
    without_gain = (verdicts_without_gain(study.incumbent, names, truth.no_gain)[0]
                    if judged else None)
    return StudyScore(world["name"], policy, seed, *gains(study, truth, study.incumbent),
                      len(kept), claimed, false_keeps, null_decisions, study.runs_used, wall,
                      truth.source, len(study.incumbent), without_gain,
                      None if claimed is None else claimed_without_gain(study.state),
                      judged_keeps, tuple(sorted(study.incumbent)))


def run_baseline(study, truth: Truth, world: dict, policy: str, seed: int,
                 started: float) -> StudyScore:
    """An outside baseline (engine.baselines) on the study's env, hypotheses and budget; its
    final configuration is judged like an incumbent, each hypothesis in or out of it as a
    verdict. Its runs are not in the study's ledger."""
    names = list(study.hypotheses)

    def run(applied: frozenset[str], run_seed: int) -> float | None:
        outcome = study.env.run(study.config_for(applied), run_seed)
        return outcome.metric if outcome.status == "ok" else None

    budget = study.cfg.study.budget_trials
    applied = best_subset(policy, names, run, budget, seed, study.cfg.env["direction"])
    wall = time.monotonic() - started
    false_keeps, null_decisions, judged_keeps = (
        verdicts_without_gain(applied, names, truth.no_gain) if truth.source != "reeval"
        else (None, None, None))
    return StudyScore(world["name"], policy, seed, *gains(study, truth, applied), len(applied),
                      None, false_keeps, null_decisions, budget, wall, truth.source,
                      len(applied), false_keeps, None, judged_keeps, tuple(sorted(applied)))


def bootstrap_interval(
    values: np.ndarray, rng: np.random.Generator, stat=np.mean
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of `stat` over seeds."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    idx = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    stats = np.array([stat(values[i]) for i in idx])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def summarise(scores: list[StudyScore], seed: int = 0) -> list[dict]:
    """Per (world, policy): means with bootstrap 95% intervals over seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    for world in dict.fromkeys(s.world for s in scores):
        for policy in dict.fromkeys(s.policy for s in scores if s.world == world):
            group = [s for s in scores if s.world == world and s.policy == policy]
            gains = np.array([s.gain for s in group])
            keeps = np.array([s.keeps for s in group])
            row = {"world": world, "policy": policy, "n": len(group),
                   "gain": float(gains.mean()), "gain_ci": bootstrap_interval(gains, rng),
                   "keeps": float(keeps.mean()),
                   "runs_used": float(np.mean([s.runs_used for s in group])),
                   "wall_seconds": float(np.mean([s.wall_seconds for s in group]))}
            # A rate needs a denominator: with no keeps (or no verdicts on null changes) it is left
            # out, and the table prints "—" rather than a 0 that was never measured.
            if all(s.false_keeps is not None for s in group):
                false_keeps = np.array([s.false_keeps for s in group])
                rate = lambda p: p[:, 0].sum() / max(p[:, 1].sum(), 1)  # noqa: E731  pooled over seeds
                judged = [keeps[i] if s.judged_keeps is None else s.judged_keeps
                          for i, s in enumerate(group)]
                for key, totals in (("false_keep", judged),
                                    ("null_keep", [s.null_decisions for s in group])):
                    pairs = np.stack([false_keeps, totals], axis=1)
                    if pairs[:, 1].sum() > 0:
                        row.update({f"{key}_rate": float(rate(pairs)),
                                    f"{key}_ci": bootstrap_interval(pairs, rng, stat=rate)})
            # the ratchet claims nothing
            if keeps.sum() > 0 and all(s.claimed_false_keeps is not None for s in group):
                row["claimed_false_keep_rate"] = float(
                    sum(s.claimed_false_keeps for s in group) / keeps.sum())
            kept_changes = np.array([s.kept_changes for s in group])
            row["kept_changes"] = float(kept_changes.mean())
            if kept_changes.sum() > 0 and all(s.changes_without_gain is not None for s in group):
                pairs = np.stack([[s.changes_without_gain for s in group], kept_changes], axis=1)
                share = lambda p: p[:, 0].sum() / max(p[:, 1].sum(), 1)  # noqa: E731
                row["change_false_rate"] = float(share(pairs))
                row["change_false_ci"] = bootstrap_interval(pairs, rng, stat=share)
                if all(s.claimed_changes_without_gain is not None for s in group):
                    row["claimed_change_false_rate"] = float(
                        sum(s.claimed_changes_without_gain for s in group) / kept_changes.sum())
            if all(s.best_gain for s in group):
                fractions = np.array([s.gain / s.best_gain for s in group])
                row["fraction_of_best"] = float(fractions.mean())
                row["fraction_ci"] = bootstrap_interval(fractions, rng)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", help="the bench TOML file")
    parser.add_argument("--out", help="output folder (overrides [bench] out_dir)")
    parser.add_argument("--seeds", type=int, help="override [bench] seeds")
    parser.add_argument("--first-seed", type=int,
                        help="override [bench] first_seed: "
                             "seeds K..K+N-1 (held-out worlds for tuning)")
    parser.add_argument("--budget-trials", type=int,
                        help="override [bench] budget_trials and every world's own budget "
                             "(runs per study)")
    parser.add_argument("--policies", nargs="+", metavar="POLICY",
                        help="override [bench] policies (kinds, the file's variants, baselines)")
    parser.add_argument("--workers", type=int,
                        help="override [bench] workers (studies in parallel)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the study folders: each study resumes where it stopped, and "
                             "a finished one is scored from its ledger without new runs")
    args = parser.parse_args(argv)
    source = Path(args.bench)
    try:
        data = load_bench(source)
        bench = data["bench"]
        bench.setdefault("seeds", 10)
        bench.setdefault("budget_trials", 60)
        bench.setdefault("policies", ["design", "ratchet"])
        if args.seeds:
            bench["seeds"] = args.seeds
        if args.policies:
            bench["policies"] = args.policies
        if args.budget_trials:  # every study's budget, a world's own included
            bench["budget_trials"] = args.budget_trials
            for world in data["worlds"]:
                world.get("study", {}).pop("budget_trials", None)
        if args.first_seed is not None:
            bench["first_seed"] = args.first_seed
        seeds = range(bench.get("first_seed", 0), bench.get("first_seed", 0) + bench["seeds"])
        out_dir = Path(args.out or bench.get("out_dir", f"bench_out/{source.stem}"))
        jobs = [(w, p, s) for w in data["worlds"] for p in bench["policies"] for s in seeds]
        for w, p, s in jobs[:: bench["seeds"]]:  # validate every world x policy before running any
            cfg = study_config(data, w, p, 0, out_dir, source)
            table = truth_table(w, source, cfg.env, cfg.hypotheses)
            if bench.get("reeval_runs", 0) < 1 and (
                    table is not None
                    or not make_env(cfg.env, base_dir=source.parent).knows_truth()):
                raise ConfigError(str(source), [
                    f"world {w['name']!r} is measured by runs (its env knows no truth"
                    f"{'; a truth table gives labels, not values' if table else ''}): "
                    "set [bench] reeval_runs >= 1"])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Every bench starts from empty study folders, unless resumed: a study left by an earlier
    # bench would resume (or, with other code, be refused) instead of being measured again.
    if not args.resume:
        shutil.rmtree(out_dir / "studies", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = args.workers or bench.get("workers", 1)
    started = time.monotonic()
    scores: list[StudyScore] = []
    with futures.ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            pending = [pool.submit(run_one, data, w, p, s, out_dir, source) for w, p, s in jobs]
            for done, future in enumerate(futures.as_completed(pending), 1):
                score = future.result()
                scores.append(score)
                print(f"[{done}/{len(jobs)}] {score.world} {score.policy} seed {score.seed}: gain "
                      f"{score.gain:+.4g}, keeps {score.keeps} "
                      f"(false {'?' if score.false_keeps is None else score.false_keeps}), "
                      f"{score.runs_used} runs, {score.wall_seconds:.1f} s, final "
                      f"{'+'.join(score.final) or '(base)'}",
                      file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            # Queued studies are cancelled; running ones stop at their next run (they got the
            # signal too).
            pool.shutdown(wait=True, cancel_futures=True)
            print(f"Interrupted: no bench.md or bench.json written. Rerun the command with "
                  f"--resume to go on where each study stopped, or without it to start over "
                  f"(the study folders under {out_dir / 'studies'} are cleared first).",
                  file=sys.stderr)
            return 130
    scores.sort(key=lambda s: (s.world, bench["policies"].index(s.policy), s.seed))
    rows = summarise(scores)
    elapsed = time.monotonic() - started
    markdown = render_markdown(rows, bench, elapsed,
                               {p: policy_kind(data, p) for p in bench["policies"]})
    (out_dir / "bench.md").write_text(markdown)
    (out_dir / "bench.json").write_text(json.dumps(
        {"bench": bench, "summary": rows, "studies": [asdict(s) for s in scores]}, indent=2))
    plot(rows, out_dir / "bench.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
