"""Structural insights: statements computed from the posterior, each with its interval and evidence.

They are stored (and decay) in memory/ under the name of the study that wrote them, recalled as
priors by the next studies on the same env (pooled over the studies that wrote them), and
rendered into the LLM proposer's prompt.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.summary import StudySummary


def source_name(study_name: str, out_dir: Path) -> str:
    """The study's name in the shared memory, and the source of the insights it writes: a name
    and folder together, as one name may be run in several folders."""
    return f"{study_name} @ {out_dir}"


def derive_insights(summary: StudySummary) -> list[dict]:
    """Category effects, per-hypothesis effects, dead ends and the noise level, in metric units.

    Pass the study's own evidence (engine.summary.own_evidence), not a posterior that holds
    priors transferred from other studies: a study pooling these with theirs would count them
    twice."""
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


RECENT_DECISIONS = 10  # decisions an LLM proposer is shown


def decision_lines(decisions: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The latest RECENT_DECISIONS judged decisions (the ledger's rows), one line each: the
    move, its verdict, P(better), interval and runs; names and numbers only."""
    return tuple(
        f"- {d['hypothesis']}: {d['verdict']}, P(better) {d['p_better']:.2f}, interval "
        f"[{d['lo']:+.4g}, {d['hi']:+.4g}], {d['n_runs']} runs"
        for d in decisions[-RECENT_DECISIONS:] if d["p_better"] is not None
        and d["lo"] is not None)
