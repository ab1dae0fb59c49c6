"""Typed records handed out by the ledger (plain frozen dataclasses, no database handles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

InsightKind = Literal["effect", "category_effect", "interaction", "dead_end", "noise"]
#: effect: one hypothesis's effect (subject = hypothesis name); category_effect: a category's
#: mean effect (subject = category); interaction: a pair (subject = "a*b"); dead_end: a
#: hypothesis reverted with high confidence (subject = hypothesis name); noise: run-to-run sd
#: (subject = backend and budget, e.g. "cpu/30s").
INSIGHT_KINDS: tuple[str, ...] = ("effect", "category_effect", "interaction", "dead_end", "noise")
#: Kinds whose subject is a hypothesis name, so they can become that hypothesis's prior.
HYPOTHESIS_KINDS: tuple[str, ...] = ("effect", "dead_end")


@dataclass(frozen=True)
class Episode:
    """One tried hypothesis: what it was, how it came out, and how it was appraised.

    `activation` is the base-level activation at the recall time (nats), `score` that plus the
    relevance bonus; both None when the episode was listed rather than recalled.
    """

    id: int
    study_id: int
    env_fingerprint: str
    hypothesis: str
    category: str
    outcome: dict[str, Any]
    surprise: float | None
    learntropy: float | None
    compression_progress: float | None
    t_created: float
    presentations: tuple[float, ...]
    activation: float | None = None
    score: float | None = None


@dataclass(frozen=True)
class Insight:
    """A structural statement computed from a posterior, with its 90% interval and evidence count.

    mean/lo/hi are in `unit` (metric units, lower is better for effects); evidence counts runs.
    `source` names the study whose runs it summarises ('' for insights stored before schema v3).
    """

    id: int
    env_fingerprint: str
    kind: str
    subject: str
    statement: str
    mean: float | None
    lo: float | None
    hi: float | None
    evidence: int
    unit: str
    t_created: float
    active: bool
    superseded_by: int | None
    source: str = ""
    presentations: tuple[float, ...] = field(default=())
