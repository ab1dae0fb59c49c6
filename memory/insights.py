"""Turning stored insights into priors for a new study and into a bounded text summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

from memory.activation import DEFAULT_DECAY, activation, sd_from_interval, widened_sd
from memory.records import HYPOTHESIS_KINDS, Insight


def pool_estimates(estimates: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Precision-weighted pool of independent Gaussian estimates (m_i, s_i) of one quantity:
    mean = sum_i m_i / s_i^2 / sum_i 1 / s_i^2, sd = (sum_i 1 / s_i^2)^(-1/2), in their units.

    The product of the estimates' Gaussian likelihoods: each counts by its precision. At least
    one estimate; every s_i finite and > 0.
    """
    if not estimates:
        raise ValueError("pooling needs at least one estimate")
    if not all(0.0 < sd < math.inf for _, sd in estimates):
        raise ValueError(f"every sd must be finite and > 0, got {[sd for _, sd in estimates]}")
    precisions = [sd**-2 for _, sd in estimates]
    total = math.fsum(precisions)
    # weights normalised first, so that a single estimate keeps its mean exactly
    mean = math.fsum(m * (w / total) for (m, _), w in zip(estimates, precisions))
    return mean, total**-0.5


def priors_from_insights(
    insights: Sequence[Insight], t_now: float, decay: float = DEFAULT_DECAY
) -> dict[str, tuple[float, float]]:
    """Map hypothesis names to a prior (mean, sd) in metric units: the sources' evidence, pooled.

    Each source (study) gives one estimate per hypothesis: its most recent active `effect` or
    `dead_end` insight (subject = hypothesis name), sd from the stored 90% interval widened by that
    insight's own decay, sd / sqrt(min(1, exp(A))) with A its activation at t_now (a power prior:
    decayed evidence counts for less). The sources' estimates are pooled by `pool_estimates`: they
    are independent, as each study stores only what its own runs say (engine.summary.own_evidence).
    Insights with no evidence left (A = -inf) or no interval give none.
    """
    latest: dict[tuple[str, str], Insight] = {}
    for insight in insights:
        if not insight.active or insight.kind not in HYPOTHESIS_KINDS:
            continue
        if insight.mean is None or insight.lo is None or insight.hi is None:
            continue
        held = latest.get((insight.subject, insight.source))
        if held is None or (insight.t_created, insight.id) > (held.t_created, held.id):
            latest[(insight.subject, insight.source)] = insight
    estimates: dict[str, list[tuple[float, float]]] = {}
    for (name, _), insight in latest.items():
        sd = widened_sd(
            sd_from_interval(insight.lo, insight.hi),  # type: ignore[arg-type]
            activation(insight.presentations, t_now, decay),
        )
        if 0.0 < sd < math.inf:  # a zero-width interval is no sd a prior can take
            estimates.setdefault(name, []).append((float(insight.mean), sd))  # type: ignore[arg-type]
    return {name: pool_estimates(pairs) for name, pairs in estimates.items()}


def _single_line(text: str) -> str:
    return " ".join(text.split())


def render_insight(insight: Insight) -> str:
    """One line: kind, subject, statement, and the numbers behind it."""
    numbers = f"n={insight.evidence}"
    if insight.mean is not None:
        numbers = f"{insight.mean:+.4g} {insight.unit}"
        if insight.lo is not None and insight.hi is not None:
            numbers += f", 90% [{insight.lo:+.4g}, {insight.hi:+.4g}]"
        numbers += f", n={insight.evidence}"
    return _single_line(f"- {insight.kind} {insight.subject}: {insight.statement} ({numbers})")


def render_summary(
    insights: Sequence[Insight],
    max_chars: int,
    *,
    t_now: float | None = None,
    decay: float = DEFAULT_DECAY,
) -> str:
    """Active insights as at most `max_chars` characters of text, most important first.

    Order: by activation at t_now when given, else by evidence; ties by recency. Lines that do not
    fit are dropped and counted in a final "(+N more insights)" line; if not even one line fits,
    the first is cut with an ellipsis.
    """
    if max_chars < 0:
        raise ValueError(f"max_chars must be >= 0, got {max_chars!r}")
    active = [insight for insight in insights if insight.active]

    def importance(insight: Insight) -> tuple[float, float, int]:
        primary = (
            activation(insight.presentations, t_now, decay)
            if t_now is not None
            else float(insight.evidence)
        )
        return (primary, insight.t_created, insight.id)

    lines = [render_insight(insight) for insight in sorted(active, key=importance, reverse=True)]
    kept: list[str] = []
    length = 0
    for line in lines:
        added = len(line) + (1 if kept else 0)
        if length + added > max_chars:
            break
        kept.append(line)
        length += added
    while len(kept) < len(lines):
        if not kept:
            return _clip(lines[0], max_chars)
        note = f"(+{len(lines) - len(kept)} more insights)"
        text = "\n".join([*kept, note])
        if len(text) <= max_chars:
            return text
        kept.pop()
    return "\n".join(kept)


def _clip(line: str, max_chars: int) -> str:
    if len(line) <= max_chars:
        return line
    return line[: max_chars - 1] + "…" if max_chars > 0 else ""
