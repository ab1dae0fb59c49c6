"""The study folder's outputs: beliefs.nc, incumbent.json, results.tsv, plots/, report.md.

Everything here is derived from the ledger and the final beliefs; nothing here is the store.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from beliefs import fit_pymc, save_inference_data, to_inference_data  # noqa: E402
from engine.insights import derive_insights  # noqa: E402

if TYPE_CHECKING:
    from engine.study import Study


def write_outputs(study: Study, stop_reason: str) -> dict[str, Path]:
    """Write every output file of a finished study and return their paths by name."""
    out = study.out_dir
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    paths = {"results": out / "results.tsv", "incumbent": out / "incumbent.json",
             "beliefs": out / "beliefs.nc", "report": out / "report.md"}
    study.ledger.export_results_tsv(study.study_id, paths["results"])
    incumbent = study.incumbent_summary()
    paths["incumbent"].write_text(json.dumps(
        {"config": study.config_for(study.incumbent), "kept": incumbent["kept"],
         "mean": incumbent["mean"], "interval": incumbent["interval"]}, indent=2) + "\n")
    insights = derive_insights(study)
    for memory in filter(None, (study.ledger, study.shared_memory)):
        with memory.transaction():
            for insight in insights:
                memory.upsert_insight(**insight)

    history = [frozenset(row["incumbent"].get("kept", [])) for row in study.ledger.steps(study.study_id)]
    idata = to_inference_data(study.beliefs, incumbent_history=history,
                              rng=np.random.default_rng(study.cfg.study.seed))
    save_inference_data(idata, paths["beliefs"])
    models = [("conjugate", idata)]
    if study.cfg.beliefs.fit_pymc and study.beliefs.n_observations > 0:
        study.progress.status("full-Bayes PyMC fit for the report")
        pymc_idata = fit_pymc(study.beliefs, draws=study.cfg.beliefs.pymc_draws,
                              tune=study.cfg.beliefs.pymc_tune, chains=study.cfg.beliefs.pymc_chains,
                              seed=study.cfg.study.seed)
        paths["beliefs_pymc"] = out / "beliefs_pymc.nc"
        save_inference_data(pymc_idata, paths["beliefs_pymc"])
        models.append(("pymc", pymc_idata))

    steps = study.ledger.steps(study.study_id)
    runs = study.ledger.runs(study.study_id)
    paths["forest"] = plot_forest(models, study, plots / "effects_forest.png")
    paths["incumbent_plot"] = plot_incumbent(steps, runs, study, plots / "incumbent.png")
    paths["efe_plot"] = plot_efe_terms(steps, plots / "efe_terms.png")
    paths["appraisal_plot"] = plot_appraisal(steps, plots / "appraisal.png")
    paths["report"].write_text(render_report(study, stop_reason, incumbent, insights, paths))
    return paths


def plot_forest(models: list, study: Study, path: Path) -> Path:
    """Effects by hypothesis with 90% HDIs, one colour per model, grouped by category."""
    import arviz as az

    order = sorted(study.beliefs.hypotheses, key=lambda h: (h.category, h.name))
    names = [h.name for h in order]
    height = 1.2 + 0.32 * len(names)
    axes = az.plot_forest([m for _, m in models], model_names=[n for n, _ in models],
                          var_names=["effect"], coords={"hypothesis": names}, hdi_prob=0.9,
                          combined=True, figsize=(8, height))
    ax = np.ravel(axes)[0]
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
    metric = study.cfg.env["metric"] if study.sign > 0 else f"-{study.cfg.env['metric']} (negated)"
    ax.set_title(f"Effect on {metric} by hypothesis (90% HDI); lower is better")
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


def _relabel(text: str, labels: dict[str, str]) -> str:
    for name, label in labels.items():
        if f"[{name}]" in text:
            return text.replace(f"effect[{name}]", label).replace(f"[{name}]", label)
    return text


def plot_incumbent(steps: list[dict], runs: list[dict], study: Study, path: Path) -> Path:
    """The incumbent's posterior mean per step with its 90% band; raw runs as dots."""
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
    ax.set_ylabel(study.cfg.env["metric"])
    ax.set_title("Incumbent over the study")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(steps: list[dict], group: str | None) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in steps:
        values = row["appraisal"].get("terms", {}) if group == "terms" else row["appraisal"]
        for key, value in values.items():
            if isinstance(value, (int, float)) and key != "seconds":
                xs, ys = series.setdefault(key, ([], []))
                xs.append(row["step"])
                ys.append(value)
    return series


def plot_efe_terms(steps: list[dict], path: Path) -> Path:
    """The chosen action's policy terms (nats) per step."""
    return _plot_series(_series(steps, "terms"), "Policy terms of the chosen action (nats; probability: its selection probability)", path)


def plot_appraisal(steps: list[dict], path: Path) -> Path:
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


def render_report(study: Study, stop_reason: str, incumbent: dict, insights: list[dict],
                  paths: dict[str, Path]) -> str:
    metric = study.cfg.env["metric"]
    decisions = study.ledger.decisions(study.study_id)
    lines = [
        f"# Study {study.cfg.study.name}",
        "",
        f"- env: {study.cfg.env['kind']} ({study.env.backend}), metric `{metric}` "
        f"({study.cfg.env['direction']} is better)",
        f"- policy: {study.cfg.policy.kind}; keep when P(better) >= {study.cfg.decision.threshold}",
        f"- runs used: {study.runs_used} of {study.cfg.study.budget_trials}; stopped: {stop_reason}",
        f"- noise sd (posterior mean): {study.beliefs.noise_sd():.4g} {metric}",
        f"- incumbent: {', '.join(incumbent['kept']) or 'the base config'}; "
        f"{metric} {incumbent['mean']:.4f}, 90% interval [{incumbent['interval'][0]:.4f}, "
        f"{incumbent['interval'][1]:.4f}]",
        "",
        "## Decisions",
        "",
        "| step | hypothesis | verdict | P(better) | 90% interval of the difference | runs | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in decisions:
        p = "—" if d["p_better"] is None else f"{d['p_better']:.3f}"
        interval = "—" if d["lo"] is None else f"[{d['lo']:+.4f}, {d['hi']:+.4f}]"
        lines.append(f"| {d['step']} | {d['hypothesis']} | {d['verdict']} | {p} | {interval} | "
                     f"{d['n_runs']} | {d['reason']} |")
    lines += ["", "## Effects (conjugate posterior, 90% intervals)", "",
              "Mean and interval are the slab's (the effect if the change does anything); P(no effect)",
              "is the spike-and-slab posterior probability that it does nothing at all.", "",
              "| hypothesis | category | mean | interval | P(no effect) |", "|---|---|---|---|---|"]
    for e in sorted(study.beliefs.effects(), key=lambda e: (e.category, e.name)):
        lo, hi = sorted((study.sign * e.lo, study.sign * e.hi))
        null = study.beliefs.null_probability(frozenset({e.name}), frozenset())
        lines.append(f"| {e.name} | {e.category} | {study.sign * e.mean:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {null:.3f} |")
    lines += ["", "## Insights", ""] + [f"- {i['statement']}" for i in insights]
    lines += ["", "## Files", ""]
    lines += [f"- `{p.relative_to(study.out_dir)}`" for p in paths.values()
              if p.exists() and p != paths["report"]]
    lines += ["", "Open the beliefs with `arviz.from_netcdf('beliefs.nc')` (arviz 0.2x) or "
              "`xarray.open_datatree('beliefs.nc')` (arviz 1.x).", ""]
    return "\n".join(lines)
