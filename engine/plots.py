"""The study folder's plots (plots/): PNG files a researcher reads without the code.

Every line has a key, outside the axes so it covers no data; quantities of different units
never share an axis.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from beliefs import Beliefs  # noqa: E402
from beliefs.export import arviz_group, forest  # noqa: E402
from engine.summary import StudySummary  # noqa: E402
from policies.types import TERM_UNITS  # noqa: E402


def plot_forest(models: list, beliefs: Beliefs, summary: StudySummary, path: Path) -> Path:
    """The effects' slab by hypothesis, one colour per model, grouped by category, in the
    metric's units (beliefs.nc is; the PyMC fit is on the internal lower-is-better scale, so a
    higher-is-better metric's draws are negated back); drawn by beliefs.export.forest, the same
    under arviz 0.2x and 1.x."""
    sign = 1.0 if summary.direction == "lower" else -1.0
    order = sorted(beliefs.hypotheses, key=lambda h: (h.category, h.name))
    draws = {}
    for k, (name, obj) in enumerate(models):
        posterior = arviz_group(obj, "posterior")
        effect = posterior["effect_slab"] if k == 0 else sign * posterior["effect"]
        draws[name] = {h.name: np.asarray(effect.sel(hypothesis=h.name)) for h in order}
    return forest(draws, {h.name: f"{h.category}: {h.name}" for h in order}, path,
                  f"Effect on {summary.metric} if the change does anything\n(slab; "
                  f"{summary.direction} is better)")


def plot_incumbent(summary: StudySummary, path: Path) -> Path:
    """The incumbent's posterior mean per step with its 90% band; raw runs as dots."""
    steps, runs = summary.steps, summary.runs
    rows = [(r["step"], r["incumbent"]) for r in steps if r["incumbent"]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if rows:
        x = np.array([s for s, _ in rows])
        mean = np.array([inc["mean"] for _, inc in rows])
        lo = np.array([inc["interval"][0] for _, inc in rows])
        hi = np.array([inc["interval"][1] for _, inc in rows])
        ax.fill_between(x, lo, hi, step="post", alpha=0.25, label="incumbent 90% credible band")
        ax.step(x, mean, where="post", label="incumbent posterior mean")
    for role, style in (("base", "o"), ("incumbent", "o"), ("candidate", "x")):
        pts = [(r["step"], r["metric"]) for r in runs if r["role"] == role and r["status"] == "ok"]
        if pts:
            ax.plot(*zip(*pts), style, markersize=4, alpha=0.6 if role == "candidate" else 0.9,
                    label=f"{role} runs")
    ax.set_xlabel("step")
    ax.set_ylabel(summary.metric)
    ax.set_title("Incumbent over the study")
    return _save(fig, [ax], path)


def _save(fig, axes, path: Path) -> Path:
    """Each axes' key outside it on the right, so no key covers the data; then the PNG."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_p_better(summary: StudySummary, beliefs: Beliefs, path: Path) -> Path:
    """P(better) of each hypothesis after each step, against the keep threshold, with the
    decisions marked (p_better_trajectory)."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    trajectory = p_better_trajectory(summary, beliefs)
    shown = sorted(trajectory, key=lambda n: -trajectory[n][-1][1])[:MOST_LINES]
    for name in shown:
        ax.plot(*zip(*trajectory[name]), marker=".", markersize=3, linewidth=1, label=name)
    for verdict, marker, colour in (("keep", "^", "green"), ("revert", "v", "red")):
        points = [(d.step, d.p_better) for d in summary.decisions
                  if d.verdict == verdict and d.p_better is not None]
        if points:
            ax.plot(*zip(*points), marker, color=colour, markersize=7, linestyle="none",
                    label=f"{verdict} decision")
    ax.axhline(summary.threshold, color="black", linestyle="--", linewidth=0.9,
               label=f"keep threshold {summary.threshold:g}")
    if not trajectory:
        ax.text(0.5, 0.5, "no step concluded", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("P(better) (probability)")
    left_out = len(trajectory) - len(shown)
    ax.set_title("P(better) of each change on the incumbent of the time"
                 + (f" ({left_out} more not shown)" if left_out else ""))
    return _save(fig, [ax], path)


MOST_LINES = 12  # lines in the P(better) plot, the likeliest to be better at the end first
MOST_STEPS = 40  # steps refitted for it, evenly spread


def p_better_trajectory(summary: StudySummary, beliefs: Beliefs) -> dict[str, list[tuple]]:
    """Per hypothesis, (step, P(better)) after each concluded step (at most MOST_STEPS, evenly
    spread), P(better) = P(mu(I + h) < mu(I - h) - epsilon | runs of the steps so far) on that
    step's incumbent I, under the spike-and-slab posterior refitted on those runs (the decision
    rule's probability, policies.keep, with its epsilon). Empty without the observations'
    steps."""
    from policies.keep import probability_better_than

    observations, steps = beliefs.observations, [s for s, _, _ in summary.observed]
    if len(steps) != len(observations):
        return {}
    concluded = [row for row in summary.steps if row["incumbent"]]
    pick = np.unique(np.linspace(0, len(concluded) - 1, MOST_STEPS).round().astype(int)) \
        if concluded else []
    trajectory: dict[str, list[tuple]] = {}
    for row in (concluded[i] for i in pick):
        fitted = beliefs.fresh()
        fitted.update([o for o, step in zip(observations, steps) if step <= row["step"]])
        incumbent = frozenset(row["incumbent"].get("kept", []))
        for h in beliefs.hypotheses:
            with_h, without = incumbent | {h.name}, incumbent - {h.name}
            p = probability_better_than(fitted, with_h, without, summary.epsilon)[0]
            trajectory.setdefault(h.name, []).append((row["step"], p))
    return trajectory


def plot_runs(summary: StudySummary, path: Path) -> Path:
    """Runs per hypothesis: how many runs applied it, split into those that ran and failed."""
    counts: dict[str, list[int]] = {e.name: [0, 0] for e in summary.effects}
    for run in summary.runs:
        for name in run["hypotheses"]:
            counts.setdefault(name, [0, 0])[run["status"] != "ok"] += 1
    names = sorted(counts, key=lambda n: (-sum(counts[n]), n))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.3 * max(1, len(names))))
    ok = np.array([counts[n][0] for n in names])
    failed = np.array([counts[n][1] for n in names])
    ax.barh(names, ok, label="ran")
    if failed.any():
        ax.barh(names, failed, left=ok, label="failed")
    ax.invert_yaxis()
    ax.margins(x=0.05)
    base = sum(not run["hypotheses"] for run in summary.runs)
    ax.set_xlabel("runs that applied it (count)")
    ax.set_title(f"Runs per hypothesis ({summary.runs_used} runs, {base} of the base config)")
    return _save(fig, [ax], path)


def _series(steps: tuple[dict, ...], group: str | None) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in steps:
        values = row["appraisal"].get("terms", {}) if group == "terms" else row["appraisal"]
        for key, value in values.items():
            if isinstance(value, (int, float)) and key != "seconds":
                xs, ys = series.setdefault(key, ([], []))
                xs.append(row["step"])
                ys.append(value)
    return series


def plot_efe_terms(steps: tuple[dict, ...], path: Path) -> Path:
    """The chosen action's policy terms per step, one panel per unit (policies.types
    .TERM_UNITS): nats, probabilities and counts never share an axis."""
    by_unit: dict[str, dict] = {}
    for name, points in _series(steps, "terms").items():
        by_unit.setdefault(TERM_UNITS.get(name, "other"), {})[name] = points
    return _plot_series(by_unit, "Policy terms of the chosen action", path)


def plot_appraisal(steps: tuple[dict, ...], path: Path) -> Path:
    """Surprise, learntropy and compression progress per step (nats)."""
    series = {k: v for k, v in _series(steps, None).items()
              if k in ("surprise", "learntropy", "compression_progress")}
    return _plot_series({"nats": series} if series else {}, "Appraisal per step", path)


def _plot_series(by_unit: dict[str, dict], title: str, path: Path) -> Path:
    """One panel per unit, sharing the step axis, each line keyed."""
    units = sorted(by_unit) or ["nothing recorded"]
    fig, axes = plt.subplots(len(units), 1, figsize=(9, 1.2 + 2.4 * len(units)), sharex=True,
                             squeeze=False)
    axes = list(axes[:, 0])
    for ax, unit in zip(axes, units):
        for name, (xs, ys) in sorted(by_unit.get(unit, {}).items()):
            ax.plot(xs, ys, marker=".", label=name)
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.set_ylabel(unit)
    if not by_unit:
        axes[0].text(0.5, 0.5, "nothing recorded", ha="center", va="center",
                     transform=axes[0].transAxes)
    axes[0].set_title(title)
    axes[-1].set_xlabel("step")
    return _save(fig, axes, path)
