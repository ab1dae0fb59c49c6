"""Turning stored insights into priors for a new study and into a bounded text summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

from memory.activation import DEFAULT_DECAY, activation, sd_from_interval, widened_sd
from memory.records import HYPOTHESIS_KINDS, Insight


def priors_from_insights(
    insights: Sequence[Insight], t_now: float, decay: float = DEFAULT_DECAY
) -> dict[str, tuple[float, float]]:
    """Map hypothesis names to a prior (mean, sd) in metric units, widened by decay.

    Uses the active `effect` and `dead_end` insights (subject = hypothesis name); where a name has
    several, the most recent wins. sd comes from the stored 90% interval, then widens as
    sd / sqrt(min(1, exp(A))) with A the insight's activation at t_now (a power prior: decayed
    evidence counts for less). Insights with no evidence left (A = -inf) or no interval give none.
    """
    latest: dict[str, Insight] = {}
    for insight in insights:
        if not insight.active or insight.kind not in HYPOTHESIS_KINDS:
            continue
        if insight.mean is None or insight.lo is None or insight.hi is None:
            continue
        held = latest.get(insight.subject)
        if held is None or (insight.t_created, insight.id) > (held.t_created, held.id):
            latest[insight.subject] = insight
    priors: dict[str, tuple[float, float]] = {}
    for name, insight in latest.items():
        sd = widened_sd(
            sd_from_interval(insight.lo, insight.hi),  # type: ignore[arg-type]
            activation(insight.presentations, t_now, decay),
        )
        if math.isfinite(sd):
            priors[name] = (float(insight.mean), sd)  # type: ignore[arg-type]
    return priors


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
