"""Structural insights: statements computed from the posterior, each with its interval and evidence.

They are stored (and decay) in memory/, recalled as priors by the next study on the same env,
and rendered into the LLM proposer's prompt.
"""
from __future__ import annotations

from engine.summary import StudySummary


def derive_insights(summary: StudySummary) -> list[dict]:
    """Category effects, per-hypothesis effects, dead ends and the noise level, in metric units."""
    metric = summary.metric
    insights = []

    def add(kind: str, subject: str, statement: str, mean: float, lo: float, hi: float,
            evidence: int):
        insights.append(dict(env_fingerprint=summary.env_fingerprint, kind=kind, subject=subject,
                             statement=statement, mean=mean, lo=lo, hi=hi, evidence=evidence,
                             unit=metric))

    for c in summary.categories:
        add("category_effect", c.category,
            f"{c.category} changes: {c.mean:+.4g} ± {(c.hi - c.lo) / 3.29:.2g} {metric} "
            f"over {c.runs} runs", c.mean, c.lo, c.hi, c.runs)
    dead_ends = {d.hypothesis: d for d in summary.decisions
                 if d.verdict == "revert" and d.p_better is not None
                 and d.p_better <= 1 - summary.threshold}
    for e in summary.effects:
        if e.runs == 0:
            continue  # an untried hypothesis has only its prior: nothing learned to pass on
        if e.name in dead_ends:
            d = dead_ends[e.name]
            add("dead_end", e.name, f"dead end: {e.name} ({e.category}) {e.mean:+.4g} {metric}, "
                f"P(better) = {d.p_better:.3f} after {d.n_runs} runs", e.mean, e.lo, e.hi, e.runs)
        else:
            add("effect", e.name, f"{e.name} ({e.category}): {e.mean:+.4g} {metric}, "
                f"90% [{e.lo:+.4g}, {e.hi:+.4g}] over {e.runs} runs", e.mean, e.lo, e.hi, e.runs)
    noise = summary.noise_sd
    subject = summary.backend + (f"@{summary.time_budget:g}s" if summary.time_budget else "")
    add("noise", subject,
        f"noise sd on {subject}: {noise:.3g} {metric} over {summary.runs_ok} runs",
        noise, noise, noise, summary.runs_ok)
    return insights
