"""The study folder's outputs: beliefs.nc, incumbent.json, results.tsv, plots/ (engine.plots),
report.md.

Everything here is derived from the ledger and the final beliefs; nothing here is the store.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from beliefs import (
    Beliefs,
    fit_pymc,
    sampler_diagnostics,
    save_inference_data,
    to_inference_data,
)
from engine import plots as plot
from engine.config import BeliefsSection
from engine.progress import Progress
from engine.summary import StudySummary


def write_outputs(summary: StudySummary, beliefs: Beliefs, insights: list[dict], stop_reason: str,
                  *, fit: BeliefsSection, progress: Progress) -> dict[str, Path]:
    """Write the study folder's outputs beside its results.tsv; return their paths by name.

    `beliefs` is the posterior the decisions were made from (internal lower-is-better scale);
    `fit` says whether and how to fit the full-Bayes PyMC model for comparison."""
    out = summary.out_dir
    folder = out / "plots"
    folder.mkdir(exist_ok=True)
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

    paths["forest"] = plot.plot_forest(models, beliefs, summary, folder / "effects_forest.png")
    paths["incumbent_plot"] = plot.plot_incumbent(summary, folder / "incumbent.png")
    paths["efe_plot"] = plot.plot_efe_terms(summary.steps, folder / "efe_terms.png")
    paths["appraisal_plot"] = plot.plot_appraisal(summary.steps, folder / "appraisal.png")
    paths["p_better_plot"] = plot.plot_p_better(summary, beliefs, folder / "p_better.png")
    paths["runs_plot"] = plot.plot_runs(summary, folder / "runs.png")
    paths["report"].write_text(render_report(summary, stop_reason, insights, paths,
                                             diagnostics))
    return paths


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
    lines += code_patch_lines(summary) + proposer_lines(summary) + forecast_report(summary)
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


def code_patch_lines(summary: StudySummary) -> list[str]:
    """The report's section on code-patch hypotheses (none when the study has none)."""
    if not summary.patches:
        return []
    confinement = [r["extra"]["confinement"] for r in summary.runs
                   if (r.get("extra") or {}).get("confinement")]
    out = summary.out_dir
    lines = ["", "## Code patches", "",
             "Each patched run trained in its own copy of the trainer, confined by "
             f"{md(confinement[-1]) if confinement else '(no patched run was made)'}, and was "
             "evaluated by the engine's own judge (train/judge.py), causality check included. "
             f"The incumbent's code: `python -m engine.show {md(out)} --diff`; the incumbent "
             f"trainer: `python -m engine.show {md(out)} --export FOLDER`.", "",
             "| hypothesis | files | lines added / removed | cannot apply with |",
             "|---|---|---|---|"]
    lines += [f"| {md(p.name)} | {md(', '.join(p.files))} | +{p.added} / -{p.removed} | "
              f"{md(', '.join(p.rivals)) or '—'} |" for p in summary.patches]
    return lines


def proposer_lines(summary: StudySummary) -> list[str]:
    """The report's section on the LLM proposer's calls and offers (none without calls)."""
    calls = summary.proposer_calls
    if not calls:
        return []
    made = [c for c in calls if c["outcome"] != "not made"]
    offers = summary.proposals
    accepted = [o["name"] for o in offers if o["outcome"] == "accepted"]
    lines = ["", "## Proposer (LLM)", "",
             f"- calls: {len(made)} made ({sum(c['outcome'] == 'failed' for c in made)} failed), "
             f"${sum(c['cost_usd'] for c in calls):.4f} spent",
             f"- accepted: {md(', '.join(accepted)) or 'none'}"]
    refused = Counter(o["reason"] for o in offers if o["outcome"] == "refused")
    lines += [f"- refused{f' ({n} times)' if n > 1 else ''}: {md(reason)}"
              for reason, n in refused.items()]
    lines += [f"- call at step {c['step']} {c['outcome']}: {md(c['reason'])}" for c in calls
              if c["reason"]]
    return lines


def forecast_report(summary: StudySummary) -> list[str]:
    """The report's section scoring the hypotheses' forecasts (none without forecasts)."""
    lines = summary.forecasts
    if not lines:
        return []
    out = ["", "## Forecasts, scored against the posterior", "",
           "Each forecast N(predicted, sd²) of a change's effect, scored by its expected log "
           "score (nats, higher is better) and the Brier score of its P(better) (lower is "
           "better) under the posterior of that effect; beside them, a forecaster with the "
           "same sd and no direction, N(0, sd²).", "",
           "| hypothesis | forecast | sd | P(better): forecast / posterior | log score "
           "(no direction) | Brier (no direction) |", "|---|---|---|---|---|---|"]
    out += [f"| {md(f.name)} | {f.forecast:+.4g} | {f.forecast_sd:.3g} | "
            f"{f.forecast_p_better:.2f} / {f.posterior_p_better:.2f} | {f.log_score:.2f} "
            f"({f.reference_log_score:.2f}) | {f.brier:.3f} ({f.reference_brier:.3f}) |"
            for f in lines]
    def mean(field: str) -> float:
        return sum(getattr(f, field) for f in lines) / len(lines)

    out += ["", f"Mean over {len(lines)} forecasts: log score {mean('log_score'):.2f} against "
            f"{mean('reference_log_score'):.2f} without direction; Brier {mean('brier'):.3f} "
            f"against {mean('reference_brier'):.3f}."]
    return out
