"""Structural insights: statements computed from the posterior, each with its interval and evidence.

They are stored (and decay) in memory/, recalled as priors by the next study on the same env,
and rendered into the LLM proposer's prompt.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.study import Study


def derive_insights(study: Study) -> list[dict]:
    """Category effects, per-hypothesis effects, dead ends and the noise level, in metric units."""
    metric = study.cfg.env["metric"]
    fingerprint = study.env.fingerprint()
    # Evidence about a hypothesis: every successful run that applied it (a reopened trial's
    # earlier runs and the incumbent's runs after a keep count too).
    runs_per = {h.name: sum(1 for r in study.history if r.value is not None and h.name in r.config)
                for h in study.beliefs.hypotheses}
    insights = []

    def add(kind: str, subject: str, statement: str, mean: float, lo: float, hi: float, evidence: int):
        insights.append(dict(env_fingerprint=fingerprint, kind=kind, subject=subject,
                             statement=statement, mean=mean, lo=lo, hi=hi, evidence=evidence,
                             unit=metric))

    for c in study.beliefs.category_effects():
        mean, (lo, hi) = study.sign * c.mean, sorted((study.sign * c.lo, study.sign * c.hi))
        evidence = sum(runs_per.get(h.name, 0) for h in study.beliefs.hypotheses
                       if h.category == c.category)
        add("category_effect", c.category,
            f"{c.category} changes: {mean:+.4g} ± {(hi - lo) / 3.29:.2g} {metric} over {evidence} runs",
            mean, lo, hi, evidence)
    effects = {e.name: e for e in study.beliefs.effects()}
    dead_ends = {d["hypothesis"]: d for d in study.ledger.decisions(study.study_id)
                 if d["verdict"] == "revert" and d["p_better"] is not None
                 and d["p_better"] <= 1 - study.cfg.decision.threshold}
    for name, e in effects.items():
        if runs_per.get(name, 0) == 0:
            continue  # an untried hypothesis has only its prior: nothing learned to pass on
        mean, (lo, hi) = study.sign * e.mean, sorted((study.sign * e.lo, study.sign * e.hi))
        if name in dead_ends:
            d = dead_ends[name]
            add("dead_end", name, f"dead end: {name} ({e.category}) {mean:+.4g} {metric}, "
                f"P(better) = {d['p_better']:.3f} after {d['n_runs']} runs", mean, lo, hi, runs_per[name])
        else:
            add("effect", name, f"{name} ({e.category}): {mean:+.4g} {metric}, 90% [{lo:+.4g}, {hi:+.4g}] "
                f"over {runs_per[name]} runs", mean, lo, hi, runs_per[name])
    noise = study.beliefs.noise_sd()
    runs_ok = sum(1 for r in study.history if r.value is not None)
    budget = study.cfg.env.get("time_budget") if study.cfg.env["kind"] == "gpt" else None
    subject = f"{study.env.backend}" + (f"@{budget:g}s" if budget else "")
    add("noise", subject, f"noise sd on {subject}: {noise:.3g} {metric} over {runs_ok} runs",
        noise, noise, noise, runs_ok)
    return insights
