"""results.tsv in autoresearch's exact format, derived from the ledger (never the store).

Columns, tab-separated: commit, val_bpb (6 decimals), memory_gb (1 decimal), status
(keep | discard | crash), description. One row for the base config, then one per candidate
evaluation, in decision order. The second column is named after the study's metric where it is
not val_bpb (a command env's "loss", say); autoresearch's readers see val_bpb.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RESULTS_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")
_VERDICT_STATUS = {"keep": "keep", "revert": "discard", "undecided": "discard"}


@dataclass(frozen=True)
class ResultRow:
    """One results.tsv row; val_bpb is the mean metric of the evaluation's ok runs (metric
    units)."""

    commit: str
    val_bpb: float
    memory_gb: float
    status: Literal["keep", "discard", "crash"]
    description: str


def config_commit(config: dict[str, Any]) -> str:
    """A short stable id of a run config: the first 7 hex digits of sha1(canonical JSON)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()[:7]


def _memory_gb(run: dict[str, Any]) -> float:
    """Peak memory of a run in GB: extra['memory_gb'], else the accelerator's peak_vram_mb where
    it was tracked (> 0), else the process's peak_rss_mb (a CPU run), else 0.0."""
    extra = run["extra"]
    if "memory_gb" in extra:
        return float(extra["memory_gb"])
    for key in ("peak_vram_mb", "peak_rss_mb"):
        if float(extra.get(key) or 0.0) > 0:
            return float(extra[key]) / 1024.0
    return 0.0


def _row(runs: Sequence[dict[str, Any]], status: str, description: str, fallback: Any) -> ResultRow:
    """The row for one evaluation: mean of ok metrics; a crash when no run finished ok."""
    ok_metrics = [run["metric"] for run in runs if run["status"] == "ok"]
    commit = config_commit(runs[-1]["config"] if runs else fallback)
    if not ok_metrics:
        return ResultRow(commit, 0.0, 0.0, "crash", description)
    return ResultRow(
        commit,
        sum(ok_metrics) / len(ok_metrics),
        max(_memory_gb(run) for run in runs),
        status,  # type: ignore[arg-type]
        description,
    )


def results_rows(
    runs: Sequence[dict[str, Any]],
    decisions: Sequence[dict[str, Any]],
    plans: Mapping[int, dict[str, Any]],
) -> list[ResultRow]:
    """Rows derived from one study's runs and decisions (as returned by `Ledger.runs/decisions`).

    The base row averages the `base` runs. Each final decision about a move h (a hypothesis, or
    a pair "a + b"; keep or revert, or the last one if the study stopped while h was undecided)
    gets a row over the candidate runs of the steps that tried h (`plans`: step -> action) since
    h's previous final decision, up to the decision's step.
    """
    rows: list[ResultRow] = []
    base_runs = [run for run in runs if run["role"] == "base"]
    if base_runs:
        rows.append(_row(base_runs, "keep", "baseline", {}))
    ordered = sorted(decisions, key=lambda decision: (decision["step"], decision["id"]))
    last_index = {decision["hypothesis"]: index for index, decision in enumerate(ordered)}
    window_start: dict[str, int] = {}
    for index, decision in enumerate(ordered):
        hypothesis, verdict = decision["hypothesis"], decision["verdict"]
        if verdict == "undecided" and last_index[hypothesis] != index:
            continue
        start = window_start.get(hypothesis, -1)
        evaluated = [
            run
            for run in runs
            if run["role"] == "candidate"
            and plans.get(run["step"], {}).get("hypothesis") == hypothesis
            and start < run["step"] <= decision["step"]
        ]
        window_start[hypothesis] = decision["step"]
        description = hypothesis if verdict != "undecided" else f"{hypothesis} (undecided)"
        if decision["p_better"] is not None:
            description += f" p_better={decision['p_better']:.3f} n={decision['n_runs']}"
        rows.append(_row(evaluated, _VERDICT_STATUS[verdict], description, [hypothesis]))
    return rows


def results_header(metric: str = "val_bpb") -> tuple[str, ...]:
    """The columns, the second named after the metric (white space in its name made "_")."""
    return (RESULTS_COLUMNS[0], "_".join(metric.split()) or RESULTS_COLUMNS[1],
            *RESULTS_COLUMNS[2:])


def format_results_tsv(rows: Sequence[ResultRow], metric: str = "val_bpb") -> str:
    """Header (the metric's column named after it) plus one tab-separated line per row;
    tabs/newlines in descriptions become spaces."""
    lines = ["\t".join(results_header(metric))]
    for row in rows:
        description = " ".join(row.description.split())
        lines.append(
            f"{row.commit}\t{row.val_bpb:.6f}\t{row.memory_gb:.1f}\t{row.status}\t{description}"
        )
    return "\n".join(lines) + "\n"


def parse_results_tsv(text: str) -> list[ResultRow]:
    """Read results.tsv text back into rows (its metric column named anything); a wrong header
    or a bad line is an error naming it."""
    lines = text.splitlines()
    header = tuple(lines[0].split("\t")) if lines else ()
    if len(header) != len(RESULTS_COLUMNS) or header != results_header(header[1] or "-"):
        raise ValueError(f"results.tsv header must be {RESULTS_COLUMNS} (the second column may "
                         f"name the metric), got {lines[:1]!r}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(RESULTS_COLUMNS) or fields[3] not in ("keep", "discard", "crash"):
            raise ValueError(f"results.tsv line {number} is malformed: {line!r}")
        rows.append(
            ResultRow(fields[0], float(fields[1]), float(fields[2]),
                      fields[3], fields[4])  # type: ignore[arg-type]
        )
    return rows


def write_results_tsv(rows: Sequence[ResultRow], path: str | Path,
                      metric: str = "val_bpb") -> None:
    """Write the rows to `path` (replacing it) through a temporary file, so readers never see
    half."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(format_results_tsv(rows, metric), encoding="utf-8")
    partial.replace(target)
