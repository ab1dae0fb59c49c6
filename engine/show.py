"""Look at a study without running anything: its decisions, incumbent, runs and budget.

    python -m engine.show STUDY_DIR [--json] [--compare OTHER_DIR]
    python -m engine.show STUDY_DIR --diff [STEP | FROM TO]
    python -m engine.show STUDY_DIR --export FOLDER
    engine show STUDY_DIR ...

It reads the folder's ledger read-only (a running study may be shown; nothing is refitted or
written). Each hypothesis shows its latest decision: verdict, P(better) and the 90% interval of
its effect on the metric (of the set's effect, and named, where it was decided only as part of
a set: a design's confirmation or a pair), and the candidate runs it has had; `--compare` puts
two studies side by side, e.g. an engine study and a ratchet study on the same env.

`--diff` prints the code the incumbent changed, as one unified diff of the trainer's mutable
files: from the base to the incumbent now, to the incumbent after STEP, or from the incumbent
after FROM to the one after TO. `--export` writes the incumbent trainer to FOLDER: `train/`
with its kept patches applied, `incumbent.diff`, and `config.json` with its knobs, so that
`PYTHONPATH=FOLDER python -m train --config FOLDER/config.json` trains it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

from engine.config import ConfigError, parse_stored
from policies.types import PAIR_JOINER


def read_study(folder: str | Path) -> dict[str, Any]:
    """The study in `folder` as plain data (what --json prints). ValueError when the folder
    holds no study ledger."""
    path = Path(folder) / "study.db"
    if not path.is_file():
        raise ValueError(f"{folder}: no study.db, so no study to show")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        study = connection.execute("SELECT * FROM studies ORDER BY id LIMIT 1").fetchone()
        if study is None:
            raise ValueError(f"{path}: the ledger holds no study yet")
        runs = connection.execute("SELECT role, hypotheses_json, status, seconds FROM runs "
                                  "WHERE study_id = ? ORDER BY step, slot",
                                  (study["id"],)).fetchall()
        decisions = connection.execute("SELECT step, hypothesis, verdict, p_better, lo, hi, "
                                       "n_runs FROM decisions WHERE study_id = ? ORDER BY step",
                                       (study["id"],)).fetchall()
        steps = connection.execute("SELECT step, incumbent_json FROM steps WHERE study_id = ? "
                                   "ORDER BY step", (study["id"],)).fetchall()
        plans = connection.execute("SELECT action_json FROM plans WHERE study_id = ? "
                                   "ORDER BY step", (study["id"],)).fetchall()
    finally:
        connection.close()
    try:
        cfg = parse_stored(json.loads(study["config_json"]), source=str(path))
    except ConfigError as exc:
        raise ValueError(f"{path}: its config no longer validates: {exc}") from None
    runs_of: dict[str, dict[str, int]] = {h.name: {"ok": 0, "failed": 0} for h in cfg.hypotheses}
    for run in runs:
        if run["role"] != "candidate":
            continue
        for name in json.loads(run["hypotheses_json"]):
            counts = runs_of.setdefault(name, {"ok": 0, "failed": 0})
            counts["ok" if run["status"] == "ok" else "failed"] += 1
    latest = {d["hypothesis"]: dict(d) for d in decisions}  # in step order: the last one wins
    # A hypothesis decided only as part of a set (a design's confirmation, a pair) shows that
    # set's latest decision, named in "via".
    via: dict[str, str] = {}
    for move in sorted((m for m in latest if PAIR_JOINER in m), key=lambda m: latest[m]["step"]):
        via.update(dict.fromkeys(move.split(PAIR_JOINER), move))  # the latest decided wins
    incumbent = json.loads(steps[-1]["incumbent_json"]) if steps else None
    # the config's hypotheses, then the proposer's in the order proposed (the order they apply)
    hypotheses = [h.to_dict() for h in cfg.hypotheses] + [
        h for row in plans for h in json.loads(row["action_json"]).get("proposed", [])]
    return {
        "name": study["name"], "folder": str(Path(folder).resolve()),
        "status": study["status"], "stop_reason": study["stop_reason"],
        "env": cfg.env["kind"], "metric": cfg.env["metric"], "direction": cfg.env["direction"],
        "policy": cfg.policy.kind,
        "budget": {"runs_used": len(runs), "budget_trials": cfg.study.budget_trials,
                   "failed_runs": sum(r["status"] != "ok" for r in runs),
                   "seconds": sum(r["seconds"] or 0.0 for r in runs)},
        "incumbent": incumbent,
        "kept_after": {row["step"]: json.loads(row["incumbent_json"])["kept"] for row in steps},
        "base_config": cfg.env.get("base", {}),
        "changes": {h["name"]: h.get("change", {}) for h in hypotheses},
        "patches": {h["name"]: h["patch"] for h in hypotheses if h.get("patch")},
        "hypotheses": [{"name": name, "runs": counts["ok"] + counts["failed"],
                        "failed_runs": counts["failed"],
                        "via": None if name in latest else via.get(name),
                        **{k: latest.get(name, latest.get(via.get(name), {})).get(k) for k in
                           ("verdict", "p_better", "lo", "hi", "step")}}
                       for name, counts in runs_of.items()]
        + [{"name": move, "runs": d["n_runs"], "failed_runs": None, "via": None,
            **{k: d[k] for k in ("verdict", "p_better", "lo", "hi", "step")}}
           for move, d in latest.items() if move not in runs_of],  # pair moves
    }


def number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render(shown: dict[str, Any]) -> str:
    """The study as text, at most 80 columns wide but for long names."""
    budget, incumbent = shown["budget"], shown["incumbent"]
    lines = [f"{shown['name']} ({shown['policy']} on a {shown['env']} env, {shown['metric']} "
             f"{shown['direction']} is better): {shown['status']}"
             + (f", {shown['stop_reason']}" if shown["stop_reason"] else ""),
             f"budget: {budget['runs_used']} of {budget['budget_trials']} runs "
             f"({budget['failed_runs']} failed), {budget['seconds']:.0f} s of runs"]
    if incumbent:
        lo, hi = incumbent["interval"]
        lines.append(f"incumbent: {', '.join(incumbent['kept']) or 'the base config'}; "
                     f"{shown['metric']} {incumbent['mean']:.4f} [{lo:.4f}, {hi:.4f}]")
    lines += ["", f"{'hypothesis':<24} {'runs':>4}  {'verdict':<9} {'P(better)':>9}  "
                  "90% interval of the effect"]
    for h in shown["hypotheses"]:
        interval = ("" if h["lo"] is None else f"[{number(h['lo'], 4)}, {number(h['hi'], 4)}]")
        verdict = h["verdict"] or ("untried" if not h["runs"] else "—")
        lines.append(f"{h['name'][:24]:<24} {h['runs']:>4}  {verdict:<9} "
                     f"{number(h['p_better']):>9}  {interval}"
                     + (f"  (as {h['via']})" if h["via"] else ""))
    return "\n".join(lines)


def render_comparison(left: dict[str, Any], right: dict[str, Any]) -> str:
    """Two studies side by side: budget, kept changes, and each hypothesis's verdict."""
    def kept(shown):
        return ", ".join(shown["incumbent"]["kept"]) if shown["incumbent"] else "—"

    def verdicts(shown):
        return {h["name"]: f"{h['verdict'] or '—'} ({h['runs']})" for h in shown["hypotheses"]}

    a, b = verdicts(left), verdicts(right)
    width = 26
    lines = [f"{'':<24} {left['name'][:width]:<{width}} {right['name'][:width]:<{width}}",
             f"{'policy':<24} {left['policy']:<{width}} {right['policy']:<{width}}",
             f"{'runs used':<24} {left['budget']['runs_used']:<{width}} "
             f"{right['budget']['runs_used']:<{width}}",
             f"{'kept':<24} {kept(left)[:width]:<{width}} {kept(right)[:width]:<{width}}",
             "", "verdict (candidate runs):"]
    for name in dict.fromkeys([*a, *b]):
        lines.append(f"{name[:24]:<24} {a.get(name, '—'):<{width}} {b.get(name, '—'):<{width}}")
    return "\n".join(lines)


def kept_at(shown: dict[str, Any], step: int | None) -> list[str]:
    """The incumbent's kept hypotheses after `step` (None: now; -1: the base config)."""
    if step == -1:
        return []
    if step is None:
        return shown["incumbent"]["kept"] if shown["incumbent"] else []
    if step not in shown["kept_after"]:
        raise ValueError(f"step {step} is not a concluded step of {shown['name']} "
                         f"(steps: 0 to {max(shown['kept_after'], default=-1)})")
    return shown["kept_after"][step]


def trainer_of(shown: dict[str, Any], kept: list[str]) -> dict[str, str]:
    """The mutable files with the kept hypotheses' patches applied, in declaration order."""
    from envs.patch import PatchError, apply_diffs
    from envs.patched import pristine_sources

    try:
        return apply_diffs(pristine_sources(), [text for name, text in shown["patches"].items()
                                                if name in kept])
    except PatchError as error:
        raise ValueError(f"the kept patches no longer apply to this trainer: {error}") from None


def code_diff(shown: dict[str, Any], steps: list[int]) -> str:
    """One unified diff of the mutable files: base -> incumbent now, base -> incumbent after
    steps[0], or incumbent after steps[0] -> after steps[1]."""
    from envs.patch import diff_between

    before, after = ([-1, None] if not steps else [-1, steps[0]] if len(steps) == 1
                     else steps)
    return diff_between(trainer_of(shown, kept_at(shown, before)),
                        trainer_of(shown, kept_at(shown, after)))


def export_trainer(shown: dict[str, Any], folder: Path) -> None:
    """Write the incumbent trainer to `folder` (see the module's doc)."""
    from envs.patched import PROJECT

    kept = kept_at(shown, None)
    shutil.copytree(PROJECT / "train", folder / "train", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # with its shipped corpus
    for relative, text in trainer_of(shown, kept).items():
        (folder / relative).write_text(text)
    config = dict(shown["base_config"])
    for name, change in shown["changes"].items():
        if name in kept:
            config.update(change)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "incumbent.diff").write_text(code_diff(shown, []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.show", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("folder", help="the study folder (holding study.db)")
    parser.add_argument("--json", action="store_true", help="print the study as JSON")
    parser.add_argument("--compare", metavar="OTHER", help="a second study folder to compare")
    parser.add_argument("--diff", nargs="*", type=int, metavar="STEP",
                        help="print the code the incumbent changed (see above)")
    parser.add_argument("--export", metavar="FOLDER", help="write the incumbent trainer there")
    args = parser.parse_args(argv)
    if args.diff is not None and len(args.diff) > 2:
        parser.error("--diff takes at most two steps (FROM TO)")
    try:
        shown = read_study(args.folder)
        other = read_study(args.compare) if args.compare else None
        if args.diff is not None:
            print(code_diff(shown, args.diff) or "(no code changes)\n", end="")
            return 0
        if args.export:
            export_trainer(shown, Path(args.export))
            kept = ", ".join(kept_at(shown, None)) or "nothing kept: the base trainer"
            print(f"wrote the incumbent trainer ({kept}) to {args.export}: train/, "
                  "config.json, incumbent.diff")
            return 0
    except (ValueError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(shown if other is None else {"studies": [shown, other]}, indent=2))
    else:
        print(render(shown) if other is None else render_comparison(shown, other))
    return 0


if __name__ == "__main__":
    sys.exit(main())
