"""SQLite ledger, episodic memory with decay, and structural insights (DESIGN.md section 6)."""

from memory.activation import (
    DEFAULT_DECAY,
    DEFAULT_RETRIEVAL_THRESHOLD,
    activation,
    evidence_weight,
    recall_score,
    sd_from_interval,
    widened_sd,
)
from memory.export import ResultRow, config_commit, parse_results_tsv, results_rows
from memory.insights import (
    pool_estimates,
    priors_from_insights,
    render_insight,
    render_summary,
)
from memory.ledger import (
    DuplicateRecordError,
    Ledger,
    SchemaTooNewError,
    StudyMismatchError,
)
from memory.records import INSIGHT_KINDS, Episode, Insight
from memory.schema import SCHEMA_VERSION

__all__ = [
    "DEFAULT_DECAY",
    "DEFAULT_RETRIEVAL_THRESHOLD",
    "INSIGHT_KINDS",
    "SCHEMA_VERSION",
    "DuplicateRecordError",
    "Episode",
    "Insight",
    "Ledger",
    "ResultRow",
    "SchemaTooNewError",
    "StudyMismatchError",
    "activation",
    "config_commit",
    "evidence_weight",
    "parse_results_tsv",
    "pool_estimates",
    "priors_from_insights",
    "recall_score",
    "render_insight",
    "render_summary",
    "results_rows",
    "sd_from_interval",
    "widened_sd",
]
