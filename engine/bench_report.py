"""The benchmark's report: the markdown tables of bench.md, their verdict lines, a text chart,
and bench.png.

Rendered from `engine.bench.summarise`'s rows (per world and policy: means with bootstrap 95%
intervals over seeds); nothing here measures anything.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def render_markdown(rows: list[dict], bench: dict, elapsed: float,
                    kinds: dict[str, str] | None = None) -> str:
    """bench.md; `kinds` maps a variant to the policy it runs (a ratchet variant is a baseline
    to beat like the ratchet)."""
    lines = [f"# Benchmark: {bench.get('name', 'bench')}", "",
             f"{bench['seeds']} seeds per policy (from seed {bench.get('first_seed', 0)}), "
             f"{bench['budget_trials']} runs each (where a world sets no budget of its own: see "
             "runs used); "
             f"means with bootstrap 95% intervals over seeds; total wall time {elapsed:.0f} s.", "",
             "False-keep rate: kept changes with no true gain / keeps whose truth is known (a "
             "truth table's \"unclear\" changes are left out). Claimed: the rate the "
             "model expected, the mean of 1 - P(better) over its keeps (calibrated when the two "
             "agree). Null keep rate: keeps of changes with no true gain / final verdicts on such "
             "changes. A keep of several changes at once (a pair, a screened set) is one keep. "
             "Changes without gain: the final configuration judged change by change, the same "
             "for every policy: the share of its changes whose removal loses no true gain, and "
             "the share the final posterior expected (sum of 1 - P(better with it than without "
             "it) / kept changes).", "",
             "| world | policy | true gain | fraction of best | false-keep rate | claimed "
             "| null keep rate | keeps | changes without gain | claimed | kept changes "
             "| runs used | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['world']} | {r['policy']} | {_cell(r, 'gain', '+.4g')} | "
            f"{_cell(r, 'fraction_of_best', '.2f')} | "
            f"{_cell(r, 'false_keep_rate', '.3f')} | "
            f"{_cell(r, 'claimed_false_keep_rate', '.3f')} | "
            f"{_cell(r, 'null_keep_rate', '.3f')} | {r['keeps']:.1f} | "
            f"{_cell(r, 'change_false_rate', '.3f')} | "
            f"{_cell(r, 'claimed_change_false_rate', '.3f')} | {r['kept_changes']:.1f} | "
            f"{r['runs_used']:.1f} | {r['wall_seconds']:.1f} |")
    lines += ["", *verdict_lines(rows, bench, kinds), "", "```", *text_chart(rows), "```", ""]
    return "\n".join(lines)


CHART_WIDTH = 30  # characters for a share of 1


def text_chart(rows: list[dict]) -> list[str]:
    """Per world and policy, a bar of the fraction of the best reachable gain and the share of
    the final configuration's changes without gain, as text (a picture a README can hold)."""
    lines = [f"{'':<28}{'fraction of the best gain':<{CHART_WIDTH + 7}}changes without gain"]
    for world in dict.fromkeys(r["world"] for r in rows):
        lines.append(world)
        for r in (r for r in rows if r["world"] == world):
            fraction = r.get("fraction_of_best")  # none where the best gain is not known
            bar = "" if fraction is None else "#" * round(max(0.0, min(1.0, fraction))
                                                          * CHART_WIDTH)
            share = "    —" if fraction is None else f"{fraction:>5.2f}"
            wasted = r.get("change_false_rate")
            waste = "—" if wasted is None else (f"{'#' * round(wasted * 10):<10} "
                                                 f"{wasted:.0%} of {r['kept_changes']:.1f}")
            lines.append(f"  {r['policy'][:25]:<26}{bar:<{CHART_WIDTH}} {share}  {waste}")
    return lines


def _cell(row: dict, key: str, spec: str) -> str:
    """'value [lo, hi]' ('value' where no interval is computed), or '—' where this bench could not
    measure it."""
    if key not in row:
        return "—"
    interval_key = {"gain": "gain_ci", "fraction_of_best": "fraction_ci"}.get(
        key, key.replace("_rate", "_ci"))
    if interval_key not in row:
        return f"{row[key]:{spec}}"
    lo, hi = row[interval_key]
    return f"{row[key]:{spec}} [{lo:{spec}}, {hi:{spec}}]"


BASELINE_POLICIES = ("ratchet", "optuna-tpe", "optuna-gp", "random-subsets")  # to beat
FALSE_KEEP_TARGET = 0.05  # the synthetic suite's bound on the default policy's false-keep rate


def verdict_lines(rows: list[dict], bench: dict, kinds: dict[str, str] | None = None) -> list[str]:
    """The targets, checked against what was measured (no claim beyond the table): the default
    policy against each baseline the bench ran (a variant of one included), at equal budget,
    with the false-keep target of [bench] false_keep_target."""
    default = bench.get("default_policy", "design")
    target = bench.get("false_keep_target", FALSE_KEEP_TARGET)
    kinds = kinds or {}
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    lines = []
    for baseline in [p for p in policies if kinds.get(p, p) in BASELINE_POLICIES]:
        worlds = [w for w in dict.fromkeys(r["world"] for r in rows)
                  if {default, baseline} <= {r["policy"] for r in rows if r["world"] == w}]
        if not worlds:
            continue
        lines += [""] if lines else []
        lines.append(f"Targets for `{default}` against `{baseline}` at equal budget:")
        within = f"within {target:.0%}"
        above = f"ABOVE {target:.0%}"
        for world in worlds:
            by = {r["policy"]: r for r in rows if r["world"] == world}
            d, b = by[default], by[baseline]
            gain_ok = d["gain"] >= b["gain"]
            line = (f"- {world}: true gain {d['gain']:+.4g} vs {b['gain']:+.4g} "
                    f"({'at least as high' if gain_ok else 'LOWER: the engine loses here'})")
            if d["keeps"] == 0:
                line += "; it kept nothing, so it made no false keep"
            elif "false_keep_rate" in d and "false_keep_rate" in b:
                fk_ok = d["false_keep_rate"] <= target
                line += (f"; false-keep rate {d['false_keep_rate']:.3f} vs "
                         f"{b['false_keep_rate']:.3f} ({within if fk_ok else above})")
            if "change_false_rate" in d and "change_false_rate" in b:
                ok = d["change_false_rate"] <= target
                line += (f"; kept changes without gain {d['change_false_rate']:.3f} vs "
                         f"{b['change_false_rate']:.3f} ({within if ok else above})")
            lines.append(line)
    return lines


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(dict.fromkeys(r["world"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(policies)
    for i, policy in enumerate(policies):
        for ax, key, ci in ((axes[0], "gain", "gain_ci"),
                            (axes[1], "false_keep_rate", "false_keep_ci")):
            xs, ys, errs = [], [], [[], []]
            for w, world in enumerate(worlds):
                r = next((r for r in rows if r["world"] == world and r["policy"] == policy), None)
                if r is None or key not in r:
                    continue
                xs.append(w + i * width)
                ys.append(r[key])
                errs[0].append(max(r[key] - r[ci][0], 0) if np.isfinite(r[ci][0]) else 0)
                errs[1].append(max(r[ci][1] - r[key], 0) if np.isfinite(r[ci][1]) else 0)
            ax.bar(xs, ys, width, yerr=errs, label=policy, capsize=2)
    for ax, title in ((axes[0], "true gain over the base (95% CI)"),
                      (axes[1], "false-keep rate (95% CI)")):
        ax.set_xticks([w + 0.4 - width / 2 for w in range(len(worlds))], worlds, rotation=15)
        ax.set_title(title)
    axes[1].axhline(0.05, color="grey", linestyle="--", linewidth=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
