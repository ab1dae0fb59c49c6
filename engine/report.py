"""The study folder's outputs: beliefs.nc, incumbent.json, results.tsv, plots/, report.md.

Everything here is derived from the ledger and the final beliefs; nothing here is the store.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from beliefs import (  # noqa: E402
    Beliefs,
    fit_pymc,
    sampler_diagnostics,
    save_inference_data,
    to_inference_data,
)
from engine.config import BeliefsSection  # noqa: E402
from engine.progress import Progress  # noqa: E402
from engine.summary import StudySummary  # noqa: E402


def write_outputs(summary: StudySummary, beliefs: Beliefs, insights: list[dict], stop_reason: str,
                  *, fit: BeliefsSection, progress: Progress) -> dict[str, Path]:
    """Write the study folder's outputs beside its results.tsv; return their paths by name.

    `beliefs` is the posterior the decisions were made from (internal lower-is-better scale);
    `fit` says whether and how to fit the full-Bayes PyMC model for comparison."""
    out = summary.out_dir
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    paths = {"results": out / "results.tsv", "incumbent": out / "incumbent.json",
             "beliefs": out / "beliefs.nc", "report": out / "report.md"}
    incumbent = summary.incumbent
    paths["incumbent"].write_text(json.dumps(
        {"config": dict(summary.incumbent_config), "kept": list(incumbent.kept),
         "mean": incumbent.mean, "interval": list(incumbent.interval)}, indent=2) + "\n")

    history = [frozenset(row["incumbent"].get("kept", [])) for row in summary.steps]
    idata = to_inference_data(beliefs, incumbent_history=history,
                              history_steps=[row["step"] for row in summary.steps],
                              rng=np.random.default_rng(summary.seed),
                              sign=1.0 if summary.direction == "lower" else -1.0,
                              run_labels=summary.observed or None)
    save_inference_data(idata, paths["beliefs"])
    models, diagnostics = [("conjugate", idata)], None
    if fit.fit_pymc and beliefs.n_observations > 0:
        progress.status("full-Bayes PyMC fit for the report")
        pymc_idata = fit_pymc(beliefs, draws=fit.pymc_draws, tune=fit.pymc_tune,
                              chains=fit.pymc_chains, seed=summary.seed)
        paths["beliefs_pymc"] = out / "beliefs_pymc.nc"
        save_inference_data(pymc_idata, paths["beliefs_pymc"])
        models.append(("pymc", pymc_idata))
        diagnostics = sampler_diagnostics(pymc_idata)
        progress.say(f"PyMC fit: {diagnostics_line(diagnostics)}",
                     always=bool(diagnostics.problems))

    paths["forest"] = plot_forest(models, beliefs, summary, plots / "effects_forest.png")
    paths["incumbent_plot"] = plot_incumbent(summary, plots / "incumbent.png")
    paths["efe_plot"] = plot_efe_terms(summary.steps, plots / "efe_terms.png")
    paths["appraisal_plot"] = plot_appraisal(summary.steps, plots / "appraisal.png")
    paths["report"].write_text(render_report(summary, stop_reason, insights, paths,
                                             diagnostics))
    return paths


def plot_forest(models: list, beliefs: Beliefs, summary: StudySummary, path: Path) -> Path:
    """The effects' slab by hypothesis with 90% HDIs, one colour per model, grouped by category,
    in the metric's units (beliefs.nc is; the PyMC fit is on the internal lower-is-better
    scale, so a higher-is-better metric's draws are negated back)."""
    import arviz as az

    sign = 1.0 if summary.direction == "lower" else -1.0
    slabs = [_group(models[0][1], "posterior")["effect_slab"].to_dataset(name="effect")]
    slabs += [(sign * _group(m, "posterior")["effect"]).to_dataset(name="effect")
              for _, m in models[1:]]
    order = sorted(beliefs.hypotheses, key=lambda h: (h.category, h.name))
    names = [h.name for h in order]
    height = 1.2 + 0.32 * len(names)
    axes = az.plot_forest(slabs, model_names=[n for n, _ in models],
                          var_names=["effect"], coords={"hypothesis": names}, hdi_prob=0.9,
                          combined=True, figsize=(8, height))
    ax = np.ravel(axes)[0]
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_title(f"Effect on {summary.metric} by hypothesis if it does something (slab, 90% "
                 f"HDI); {summary.direction} is better")
    legend = ax.get_legend()
    if legend is not None:  # moved outside the axes, so it never hides the first row; arviz's
        # handles are not labelled artists, so they are carried over explicitly
        ax.legend(legend.legend_handles, [t.get_text() for t in legend.get_texts()],
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    labels = {h.name: f"{h.category}: {h.name}" for h in order}
    ax.set_yticklabels([_relabel(t.get_text(), labels) for t in ax.get_yticklabels()])
    fig = ax.get_figure()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _group(obj, name: str):
    """A group of an InferenceData (arviz 0.2x) or DataTree (1.x), as an xarray Dataset."""
    group = getattr(obj, name) if hasattr(obj, name) else obj[name]
    return group.to_dataset() if hasattr(group, "to_dataset") else group


def _relabel(text: str, labels: dict[str, str]) -> str:
    for name, label in labels.items():
        if f"[{name}]" in text:
            return text.replace(f"effect[{name}]", label).replace(f"[{name}]", label)
    return text


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
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    """The chosen action's policy terms (nats) per step."""
    title = "Policy terms of the chosen action (nats; probability: its selection probability)"
    return _plot_series(_series(steps, "terms"), title, path)


def plot_appraisal(steps: tuple[dict, ...], path: Path) -> Path:
    """Surprise, learntropy and compression progress per step (nats)."""
    series = {k: v for k, v in _series(steps, None).items()
              if k in ("surprise", "learntropy", "compression_progress")}
    return _plot_series(series, "Appraisal per step (nats)", path)


def _plot_series(series: dict, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, marker=".", label=name)
    if not series:
        ax.text(0.5, 0.5, "nothing recorded", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_xlabel("step")
    ax.set_title(title)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MARKDOWN_SPECIALS = "\\`*_[]<>#|~"


def md(text: object) -> str:
    """Text shown as itself in Markdown: each character that Markdown or HTML would read as
    markup is escaped, and line breaks become spaces (a cell, or a list item, stays one)."""
    flat = " ".join(str(text).splitlines())
    return "".join(f"\\{c}" if c in MARKDOWN_SPECIALS else c for c in flat)


def diagnostics_line(d) -> str:
    """A PyMC fit's diagnostics in a line, with a warning when it cannot be trusted."""
    rhat = f"max r-hat {d.max_rhat:.3f}" if d.chains > 1 else "no r-hat (one chain)"
    line = (f"{d.divergences} divergences, {rhat}, min bulk ESS {d.min_ess_bulk:.0f} over "
            f"{d.chains} chain{'s' if d.chains > 1 else ''}")
    if d.problems:
        line += (f". WARNING: not trustworthy ({'; '.join(d.problems)}): compare its effects "
                 "with the conjugate posterior's, which made the decisions, before reading them")
    return line


def render_report(summary: StudySummary, stop_reason: str, insights: list[dict],
                  paths: dict[str, Path], diagnostics=None) -> str:
    metric, incumbent = summary.metric, summary.incumbent
    lines = [
        f"# Study {md(summary.name)}",
        "",
        f"- env: {md(summary.env_kind)} ({md(summary.backend)}), metric {md(metric)} "
        f"({summary.direction} is better)",
        f"- policy: {md(summary.policy)}; keep when P(better) >= {summary.threshold}",
        f"- runs used: {summary.runs_used} of {summary.budget_trials}; stopped: {md(stop_reason)}",
        f"- noise sd (posterior mean): {summary.noise_sd:.4g} {md(metric)}",
        f"- incumbent: {md(', '.join(incumbent.kept) or 'the base config')}; "
        f"{md(metric)} {incumbent.mean:.4f}, 90% interval [{incumbent.interval[0]:.4f}, "
        f"{incumbent.interval[1]:.4f}]",
        "",
        "## Decisions",
        "",
        "| step | hypothesis | verdict | P(better) | 90% interval of the difference | runs "
        "| reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in summary.decisions:
        p = "—" if d.p_better is None else f"{d.p_better:.3f}"
        interval = "—" if d.lo is None else f"[{d.lo:+.4f}, {d.hi:+.4f}]"
        lines.append(f"| {d.step} | {md(d.hypothesis)} | {d.verdict} | {p} | {interval} | "
                     f"{d.n_runs} | {md(d.reason)} |")
    if summary.undecided:
        lines += ["", "## Undecided at the end of the budget", "",
                  "Neither kept nor reverted when last judged; they are not in the incumbent, "
                  "and more runs would decide them. P(better) is against the final incumbent.",
                  "",
                  "| move | P(better) | 90% interval of the difference | runs |",
                  "|---|---|---|---|"]
        lines += [f"| {md(u.move)} | {u.p_better:.3f} | [{u.lo:+.4f}, {u.hi:+.4f}] | {u.runs} |"
                  for u in summary.undecided]
    lines += ["", "## Effects (conjugate posterior, 90% intervals)", "",
              "Mean and interval are the slab's (the effect if the change does anything); "
              "P(no effect)",
              "is the spike-and-slab posterior probability that it does nothing at all.", "",
              "| hypothesis | category | mean | interval | P(no effect) |", "|---|---|---|---|---|"]
    for e in sorted(summary.effects, key=lambda e: (e.category, e.name)):
        lines.append(f"| {md(e.name)} | {md(e.category)} | {e.mean:+.4f} | "
                     f"[{e.lo:+.4f}, {e.hi:+.4f}] | {e.p_no_effect:.3f} |")
    if diagnostics is not None:
        lines += ["", "## Full-Bayes fit (PyMC, NUTS)", "", diagnostics_line(diagnostics) + "."]
    lines += ["", "## Insights", ""] + [f"- {md(i['statement'])}" for i in insights]
    lines += ["", "## Files", ""]
    lines += [f"- `{p.relative_to(summary.out_dir)}`" for p in paths.values()
              if p.exists() and p != paths["report"]]
    better = "< 0" if summary.direction == "lower" else "> 0"
    lines += ["", "Open the beliefs with `arviz.from_netcdf('beliefs.nc')` (arviz 0.2x) or "
              "`xarray.open_datatree('beliefs.nc')` (arviz 1.x). Everything there is in "
              f"{md(metric)}'s units. `effect` holds draws of the spike-and-slab effect of each "
              f"change against the base config (exactly 0 where `null` is 1), so "
              f"`(posterior.effect {better}).mean()` is its P(better); the exact P(null) and "
              "P(better) are in the posterior's attrs; `effect_slab` is the effect if it does "
              "anything. `beliefs_pymc.nc` (slab only) is on the internal lower-is-better "
              "scale.", ""]
    return "\n".join(lines)
