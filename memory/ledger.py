"""The SQLite ledger: studies, runs, steps, decisions, episodic memory and insights.

One `Ledger` per process (a sqlite3 connection is not shared across threads or forks). WAL mode
lets readers run beside one writer; every write goes through `transaction()`, which opens with
BEGIN IMMEDIATE so that concurrent writers queue on the busy timeout instead of failing with
"database is locked" (a deferred transaction that reads first cannot wait for the write lock).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from memory.activation import (
    DEFAULT_DECAY,
    DEFAULT_RETRIEVAL_THRESHOLD,
    activation,
    recall_score,
)
from memory.export import ResultRow, results_rows, write_results_tsv
from memory.records import INSIGHT_KINDS, Episode, Insight
from memory.schema import SCHEMA_VERSION, migrate, read_schema_version
from train.vocabulary import ROLES as RUN_ROLES
from train.vocabulary import RUN_STATUSES, VERDICTS

END_STATUSES = ("finished", "stopped", "failed")


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer version of this package."""


class DuplicateRecordError(ValueError):
    """A run, step or decision with the same key is already in the ledger."""


class StudyMismatchError(ValueError):
    """A study of the same name exists with a different config, env or seed: `column` names
    which, `stored` is what the ledger holds there."""

    def __init__(self, message: str, column: str = "", stored: Any = None) -> None:
        super().__init__(message)
        self.column, self.stored = column, stored


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _timestamp(value: str | float | None) -> str | None:
    """ISO-8601 UTC text from ISO text or epoch seconds."""
    if value is None or isinstance(value, str):
        return value
    return datetime.fromtimestamp(float(value), timezone.utc).isoformat(timespec="milliseconds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _finite_or_none(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite or None, got {value!r}")
    return value


class Ledger:
    """The study database at `path` (created, or migrated after a backup, on open)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        # isolation_level=None: no implicit BEGINs; transactions are opened explicitly below.
        conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None)
        # Plugins are skipped: scanning entry points is slow and could alter the connection.
        self._db = sqlite_utils.Database(conn, execute_plugins=False)
        self._conn = conn
        self._savepoints = 0
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise RuntimeError(f"could not put {self.path} in WAL mode (journal_mode={mode!r})")
            conn.execute("PRAGMA foreign_keys=ON")
            self._open_schema()
        except BaseException:
            conn.close()
            raise

    # -- connection, schema, transactions ------------------------------------------------------

    def _open_schema(self) -> None:
        found = read_schema_version(self._conn)
        if found > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"{self.path} has schema version {found}, but this memory package reads at most "
                f"version {SCHEMA_VERSION}; open it with a newer engine"
            )
        if found == SCHEMA_VERSION:
            return
        if found > 0:
            self._backup(self.path.with_name(f"{self.path.name}.bak-v{found}"))
        with self.transaction():
            # Another process may have migrated between the read above and the lock.
            current = read_schema_version(self._conn)
            if current < SCHEMA_VERSION:
                migrate(self._conn, current)

    def _backup(self, destination: Path) -> None:
        """A consistent copy through SQLite's backup API (a file copy could miss the WAL)."""
        target = sqlite3.connect(str(destination))
        try:
            self._conn.backup(target)
        finally:
            target.close()

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        return read_schema_version(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Ledger]:
        """One atomic unit of writes (an engine step): all of it is committed, or none of it.

        Nested uses become savepoints of the outer transaction.
        """
        if self._conn.in_transaction:
            self._savepoints += 1
            name = f"ledger_{self._savepoints}"
            self._conn.execute(f"SAVEPOINT {name}")
            try:
                yield self
            except BaseException:
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
                raise
            else:
                self._conn.execute(f"RELEASE {name}")
            finally:
                self._savepoints -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def experiment_time(self) -> int:
        """Experiment time t: the number of runs recorded in this database (all studies)."""
        return int(self._conn.execute("SELECT count(*) FROM runs").fetchone()[0])

    def _time(self, t_now: float | None) -> float:
        if t_now is None:
            return float(self.experiment_time())
        if not (t_now >= 0.0 and math.isfinite(t_now)):
            raise ValueError(f"t_now must be a finite number of experiments >= 0, got {t_now!r}")
        return float(t_now)

    def _insert(self, table: str, row: dict[str, Any], what: str) -> int:
        try:
            return int(self._db[table].insert(row).last_pk)  # type: ignore[union-attr]
        except sqlite3.IntegrityError as error:
            if "UNIQUE" in str(error):
                raise DuplicateRecordError(
                    f"{what} is already in the ledger ({error}); a resumed study must continue "
                    "after its last recorded step"
                ) from None
            raise

    # -- studies -------------------------------------------------------------------------------

    def start_study(
        self, name: str, config: dict[str, Any], env_fingerprint: str, seed: int, *,
        same_config: Callable[[dict[str, Any]], bool] | None = None,
    ) -> int:
        """The id of study `name`, created now or resumed.

        Resuming requires the same config, env fingerprint and seed (StudyMismatchError names the
        field otherwise). `same_config` judges the stored config record (default: equal to
        `config`); one it accepts is replaced by `config`, the record of this session's file. A
        resumed study that had stopped or failed is marked running again.
        """
        given = {"config_json": _json(config), "env_fingerprint": env_fingerprint,
                 "seed": int(seed)}
        with self.transaction():
            rows = list(self._db["studies"].rows_where("name = ?", [name]))
            if not rows:
                return self._insert(
                    "studies",
                    {"name": name, **given, "started": _now(), "status": "running"},
                    f"study {name!r}",
                )
            stored = rows[0]
            for column, value in given.items():
                accepted = (stored[column] == value or column == "config_json"
                            and same_config is not None
                            and same_config(json.loads(stored[column])))
                if not accepted:
                    raise StudyMismatchError(
                        f"study {name!r} exists with {column}={stored[column]!r}, but "
                        f"{value!r} was given; use a new study name", column, stored[column]
                    )
            update = {"config_json": given["config_json"]}
            if stored["status"] != "finished":
                update |= {"status": "running", "finished": None, "stop_reason": None}
            self._db["studies"].update(stored["id"], update)
            return int(stored["id"])

    def study(self, study_id: int) -> dict[str, Any]:
        """The study row with its config decoded under 'config'."""
        rows = list(self._db["studies"].rows_where("id = ?", [study_id]))
        if not rows:
            raise KeyError(f"no study with id {study_id!r} in {self.path}")
        row = rows[0]
        row["config"] = json.loads(row.pop("config_json"))
        return row

    def study_names(self) -> list[str]:
        """The names of the studies this database holds, oldest first."""
        return [row["name"] for row in self._db["studies"].rows_where(order_by="id")]

    def find_study(self, name: str) -> int | None:
        """The id of study `name`, or None when this database does not hold it."""
        rows = list(self._db["studies"].rows_where("name = ?", [name]))
        return int(rows[0]["id"]) if rows else None

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the main database file (SQLite's FULL checkpoint);
        True when it completed, so that the main file alone holds every committed record
        (False when another connection kept it busy)."""
        busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        return busy == 0

    def finish_study(self, study_id: int, status: str, stop_reason: str | None = None) -> None:
        """Mark a study finished, stopped or failed, with the reason."""
        if status not in END_STATUSES:
            raise ValueError(f"study status must be one of {END_STATUSES}, got {status!r}")
        self.study(study_id)
        with self.transaction():
            self._db["studies"].update(
                study_id, {"status": status, "stop_reason": stop_reason, "finished": _now()}
            )

    # -- runs, steps, decisions ------------------------------------------------------------------

    def record_run(
        self,
        study_id: int,
        step: int,
        slot: int,
        *,
        role: str,
        hypotheses: Iterable[str],
        config: dict[str, Any],
        seed: int,
        status: str,
        metric: float | None = None,
        steps: int | None = None,
        seconds: float | None = None,
        backend: str | None = None,
        code_hash: str | None = None,
        eval_hash: str | None = None,
        started: str | float | None = None,
        finished: str | float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        """Insert one run and return its id. (study_id, step, slot) is unique: a second insert of
        the same key raises DuplicateRecordError and writes nothing.

        A run with status 'ok' needs a finite metric; other statuses store a non-finite metric
        as NULL. Times are ISO-8601 UTC text or epoch seconds.
        """
        if role not in RUN_ROLES:
            raise ValueError(f"run role must be one of {RUN_ROLES}, got {role!r}")
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        if status == "ok":
            metric = _finite_or_none("metric of an 'ok' run", metric)
            if metric is None:
                raise ValueError("a run with status 'ok' needs a metric, got None")
        elif metric is not None and not math.isfinite(metric):
            metric = None
        names = sorted(set(hypotheses))
        row = {
            "study_id": study_id, "step": int(step), "slot": int(slot), "role": role,
            "hypotheses_json": _json(names), "config_json": _json(config), "seed": int(seed),
            "metric": metric, "status": status, "steps": steps, "seconds": seconds,
            "backend": backend, "code_hash": code_hash, "eval_hash": eval_hash,
            "started": _timestamp(started), "finished": _timestamp(finished),
            "extra_json": _json(extra or {}),
        }  # fmt: skip
        with self.transaction():
            self.study(study_id)
            return self._insert(
                "runs", row, f"run (study_id={study_id}, step={step}, slot={slot})"
            )

    def runs(self, study_id: int) -> list[dict[str, Any]]:
        """The study's runs by (step, slot); JSON decoded under 'hypotheses', 'config', 'extra'."""
        rows = []
        for row in self._db["runs"].rows_where("study_id = ?", [study_id], order_by="step, slot"):
            row["hypotheses"] = json.loads(row.pop("hypotheses_json"))
            row["config"] = json.loads(row.pop("config_json"))
            row["extra"] = json.loads(row.pop("extra_json"))
            rows.append(row)
        return rows

    def record_step(
        self,
        study_id: int,
        step: int,
        *,
        action: dict[str, Any],
        appraisal: dict[str, Any],
        incumbent: dict[str, Any],
    ) -> None:
        """Mark a step done with its action, appraisal (surprise, learntropy, compression
        progress, efe terms) and incumbent (mean, interval). Unique per (study_id, step)."""
        with self.transaction():
            self.study(study_id)
            self._insert(
                "steps",
                {
                    "study_id": study_id, "step": int(step), "action_json": _json(action),
                    "appraisal_json": _json(appraisal), "incumbent_json": _json(incumbent),
                    "finished": _now(),
                },  # fmt: skip
                f"step (study_id={study_id}, step={step})",
            )

    def plan_step(self, study_id: int, step: int, *, action: dict[str, Any]) -> None:
        """Record what a step will do before its runs start; unique per (study_id, step)."""
        with self.transaction():
            self.study(study_id)
            self._insert(
                "plans",
                {"study_id": study_id, "step": int(step), "action_json": _json(action),
                 "created": _now()},
                f"plan (study_id={study_id}, step={step})",
            )

    def plans(self, study_id: int) -> dict[int, dict[str, Any]]:
        """The study's planned actions by step; a plan without a steps row is unfinished."""
        rows = self._db["plans"].rows_where("study_id = ?", [study_id], order_by="step")
        return {int(row["step"]): json.loads(row["action_json"]) for row in rows}

    def steps(self, study_id: int) -> list[dict[str, Any]]:
        """The study's steps in order; JSON decoded under 'action', 'appraisal', 'incumbent'."""
        rows = []
        for row in self._db["steps"].rows_where("study_id = ?", [study_id], order_by="step"):
            for name in ("action", "appraisal", "incumbent"):
                row[name] = json.loads(row.pop(f"{name}_json"))
            rows.append(row)
        return rows

    def last_step(self, study_id: int) -> int | None:
        """The highest recorded step of the study, or None before the first: resume after it."""
        row = self._conn.execute(
            "SELECT max(step) FROM steps WHERE study_id = ?", (study_id,)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def record_decision(
        self,
        study_id: int,
        step: int,
        hypothesis: str,
        verdict: str,
        *,
        n_runs: int,
        p_better: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
        reason: str = "",
    ) -> int:
        """Insert a keep/revert/undecided decision; unique per (study_id, step, hypothesis).

        p_better is a probability; (lo, hi) the credible interval of the difference (metric units).
        """
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        if p_better is not None and not (0.0 <= p_better <= 1.0):
            raise ValueError(f"p_better must lie in [0, 1], got {p_better!r}")
        if n_runs < 0:
            raise ValueError(f"n_runs must be >= 0, got {n_runs!r}")
        row = {
            "study_id": study_id, "step": int(step), "hypothesis": hypothesis, "verdict": verdict,
            "p_better": p_better, "lo": _finite_or_none("lo", lo), "hi": _finite_or_none("hi", hi),
            "n_runs": int(n_runs), "reason": reason, "created": _now(),
        }  # fmt: skip
        with self.transaction():
            self.study(study_id)
            return self._insert(
                "decisions",
                row,
                f"decision (study_id={study_id}, step={step}, hypothesis={hypothesis!r})",
            )

    def decisions(self, study_id: int) -> list[dict[str, Any]]:
        """The study's decisions by (step, id)."""
        return list(
            self._db["decisions"].rows_where("study_id = ?", [study_id], order_by="step, id")
        )

    def record_proposer_call(self, study_id: int, step: int, *, outcome: str, cost_usd: float,
                             attempts: int = 1, reason: str = "", accepted: Iterable[str] = (),
                             refused: Iterable[str] = ()) -> int:
        """One proposer call (outcome 'answered', 'failed' or 'not made'), the requests it took
        and what they cost, the names it added and why each other offer was refused; returns
        the call's id."""
        with self.transaction():
            self.study(study_id)
            call = int(self._db["proposer_calls"].insert(
                {"study_id": study_id, "step": int(step), "outcome": outcome,
                 "attempts": int(attempts), "cost_usd": float(cost_usd), "reason": reason,
                 "created": _now()}).last_pk)
            for name in accepted:
                self._db["proposals"].insert({"call_id": call, "outcome": "accepted",
                                              "name": name, "reason": ""})
            for why in refused:
                self._db["proposals"].insert({"call_id": call, "outcome": "refused",
                                              "name": None, "reason": why})
        return call

    def proposer_spend(self, study_id: int) -> tuple[int, float]:
        """(LLM requests made, USD they cost) of the study's proposer."""
        calls, cost = self._db.execute(
            "SELECT coalesce(sum(attempts), 0), coalesce(sum(cost_usd), 0) FROM proposer_calls "
            "WHERE study_id = ? AND outcome != 'not made'", [study_id]).fetchone()
        return int(calls), float(cost)

    def proposer_calls(self, study_id: int) -> list[dict[str, Any]]:
        """The study's proposer calls by id: step, outcome, cost_usd, reason."""
        return list(self._db["proposer_calls"].rows_where("study_id = ?", [study_id],
                                                          order_by="id"))

    def proposals(self, study_id: int) -> list[dict[str, Any]]:
        """The study's proposer offers, each with its call's step, in the order made."""
        cursor = self._db.execute(
            "SELECT c.step, p.outcome, p.name, p.reason FROM proposals p "
            "JOIN proposer_calls c ON c.id = p.call_id WHERE c.study_id = ? ORDER BY p.id",
            [study_id])
        return [dict(zip(("step", "outcome", "name", "reason"), row)) for row in cursor]

    def results_rows(self, study_id: int) -> list[ResultRow]:
        """The results.tsv rows derived from this study's runs and decisions."""
        return results_rows(self.runs(study_id), self.decisions(study_id), self.plans(study_id))

    def export_results_tsv(self, study_id: int, path: str | Path,
                           metric: str = "val_bpb") -> list[ResultRow]:
        """Write results.tsv (autoresearch's columns, the metric's named after it) for the
        study and return its rows."""
        rows = self.results_rows(study_id)
        write_results_tsv(rows, path, metric)
        return rows

    # -- episodic memory -------------------------------------------------------------------------

    def record_episode(
        self,
        *,
        study_id: int,
        env_fingerprint: str,
        hypothesis: str,
        category: str,
        outcome: dict[str, Any],
        surprise: float | None = None,
        learntropy: float | None = None,
        compression_progress: float | None = None,
        t_now: float | None = None,
    ) -> int:
        """Store an episode, first presented at t_now (default: the current experiment time)."""
        with self.transaction():
            t = self._time(t_now)
            self.study(study_id)
            episode_id = self._insert(
                "episodes",
                {
                    "study_id": study_id, "env_fingerprint": env_fingerprint,
                    "hypothesis": hypothesis, "category": category, "outcome_json": _json(outcome),
                    "surprise": _finite_or_none("surprise", surprise),
                    "learntropy": _finite_or_none("learntropy", learntropy),
                    "compression_progress": _finite_or_none(
                        "compression_progress", compression_progress
                    ),
                    "t_created": t,
                },  # fmt: skip
                "episode",
            )
            self._db["episode_presentations"].insert({"episode_id": episode_id, "t": t})
            return episode_id

    def _presentations(self, table: str, key: str) -> dict[int, tuple[float, ...]]:
        times: dict[int, list[float]] = {}
        for owner, t in self._conn.execute(f"SELECT {key}, t FROM {table} ORDER BY t"):
            times.setdefault(owner, []).append(t)
        return {owner: tuple(ts) for owner, ts in times.items()}

    def episodes(self, *, env_fingerprint: str | None = None) -> list[Episode]:
        """All stored episodes (forgotten ones included), oldest first; nothing is reinforced."""
        where, params = (
            ("env_fingerprint = ?", [env_fingerprint]) if env_fingerprint is not None
            else (None, [])
        )
        presentations = self._presentations("episode_presentations", "episode_id")
        return [
            Episode(
                id=row["id"], study_id=row["study_id"], env_fingerprint=row["env_fingerprint"],
                hypothesis=row["hypothesis"], category=row["category"],
                outcome=json.loads(row["outcome_json"]), surprise=row["surprise"],
                learntropy=row["learntropy"], compression_progress=row["compression_progress"],
                t_created=row["t_created"], presentations=presentations.get(row["id"], ()),
            )  # fmt: skip
            for row in self._db["episodes"].rows_where(where, params, order_by="id")
        ]

    def recall(
        self,
        k: int,
        *,
        category: str | None = None,
        env_fingerprint: str | None = None,
        t_now: float | None = None,
        decay: float = DEFAULT_DECAY,
        threshold: float = DEFAULT_RETRIEVAL_THRESHOLD,
        relevance_weight: float = 1.0,
    ) -> list[Episode]:
        """The top-k episodes by activation plus relevance, each reinforced at t_now.

        score = A + relevance_weight * (same category + same env fingerprint); episodes whose
        score is below `threshold` are forgotten for recall (they stay in the ledger). Returned
        episodes carry `activation` and `score` as they were when recalled, before reinforcement.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k!r}")
        with self.transaction():
            t = self._time(t_now)
            scored = []
            for episode in self.episodes():
                base = activation(episode.presentations, t, decay)
                matches = int(category is not None and episode.category == category) + int(
                    env_fingerprint is not None and episode.env_fingerprint == env_fingerprint
                )
                score = recall_score(base, matches, relevance_weight)
                if score >= threshold:
                    scored.append(replace(episode, activation=base, score=score))
            scored.sort(key=lambda episode: (episode.score, episode.t_created, episode.id),
                        reverse=True)
            recalled = scored[:k]
            self._db["episode_presentations"].insert_all(
                {"episode_id": episode.id, "t": t} for episode in recalled
            )
        return recalled

    # -- structural insights ---------------------------------------------------------------------

    def upsert_insight(
        self,
        *,
        env_fingerprint: str,
        kind: str,
        subject: str,
        statement: str,
        evidence: int,
        unit: str,
        mean: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
        source: str = "",
        t_now: float | None = None,
    ) -> int:
        """Store an insight and return its id; at most one is active per (env, kind, subject,
        source), `source` naming the study whose runs it summarises.

        The same evidence again (statement, numbers, unit) returns the active insight unchanged.
        Changed evidence inserts a new active insight, first presented at t_now, and marks the old
        one of the same source inactive with superseded_by pointing at the new one (history is
        kept); other sources' insights stay active, for priors to pool.
        """
        if kind not in INSIGHT_KINDS:
            raise ValueError(f"insight kind must be one of {INSIGHT_KINDS}, got {kind!r}")
        if evidence < 0:
            raise ValueError(f"evidence must be a run count >= 0, got {evidence!r}")
        mean, lo, hi = (_finite_or_none(n, v) for n, v in (("mean", mean), ("lo", lo), ("hi", hi)))
        if (lo is None) != (hi is None) or (lo is not None and lo > hi):  # type: ignore[operator]
            raise ValueError(
                f"insight interval must be both bounds with lo <= hi, got ({lo}, {hi})")
        content = {
            "statement": statement, "mean": mean, "lo": lo, "hi": hi,
            "evidence": int(evidence), "unit": unit,
        }  # fmt: skip
        key = {"env_fingerprint": env_fingerprint, "kind": kind, "subject": subject,
               "source": source}
        with self.transaction():
            t = self._time(t_now)
            held = list(
                self._db["insights"].rows_where(
                    "env_fingerprint = ? AND kind = ? AND subject = ? AND source = ? "
                    "AND active = 1",
                    [env_fingerprint, kind, subject, source],
                )
            )
            if held and all(held[0][name] == value for name, value in content.items()):
                return int(held[0]["id"])
            if held:
                self._db["insights"].update(held[0]["id"], {"active": 0})
            new_id = self._insert(
                "insights",
                {**key, **content, "t_created": t, "active": 1, "superseded_by": None},
                f"insight {key}",
            )
            if held:
                self._db["insights"].update(held[0]["id"], {"superseded_by": new_id})
            self._db["insight_presentations"].insert({"insight_id": new_id, "t": t})
            return new_id

    def insights(
        self,
        *,
        env_fingerprint: str | None = None,
        kind: str | None = None,
        include_superseded: bool = False,
    ) -> list[Insight]:
        """Stored insights, oldest first; superseded ones only when asked. Nothing is reinforced."""
        clauses, params = [], []
        for column, value in (("env_fingerprint", env_fingerprint), ("kind", kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if not include_superseded:
            clauses.append("active = 1")
        presentations = self._presentations("insight_presentations", "insight_id")
        return [
            Insight(
                id=row["id"], env_fingerprint=row["env_fingerprint"], kind=row["kind"],
                subject=row["subject"], statement=row["statement"], mean=row["mean"],
                lo=row["lo"], hi=row["hi"], evidence=row["evidence"], unit=row["unit"],
                t_created=row["t_created"], active=bool(row["active"]),
                superseded_by=row["superseded_by"], source=row["source"],
                presentations=presentations.get(row["id"], ()),
            )  # fmt: skip
            for row in self._db["insights"].rows_where(
                " AND ".join(clauses) or None, params, order_by="id"
            )
        ]

    def recall_insights(
        self,
        *,
        env_fingerprint: str,
        t_now: float | None = None,
        decay: float = DEFAULT_DECAY,
        threshold: float = DEFAULT_RETRIEVAL_THRESHOLD,
        k: int | None = None,
        exclude_source: str | None = None,
    ) -> list[Insight]:
        """Active insights of an env whose activation at t_now reaches `threshold`, strongest
        first (at most k), each reinforced at t_now. Those of `exclude_source` (the recalling
        study's own) are left out and not reinforced: a study is no evidence for itself.

        They are returned with the presentations they had when recalled, so that
        `priors_from_insights(recalled, t_now, decay)` widens them by the decay they had suffered.
        """
        if k is not None and k < 0:
            raise ValueError(f"k must be >= 0 or None, got {k!r}")
        with self.transaction():
            t = self._time(t_now)
            stored = [insight for insight in self.insights(env_fingerprint=env_fingerprint)
                      if insight.source != exclude_source]
            strength = {insight.id: activation(insight.presentations, t, decay)
                        for insight in stored}
            recalled = [insight for insight in stored if strength[insight.id] >= threshold]
            recalled.sort(key=lambda insight: (strength[insight.id], insight.id), reverse=True)
            recalled = recalled[:k] if k is not None else recalled
            self._db["insight_presentations"].insert_all(
                {"insight_id": insight.id, "t": t} for insight in recalled
            )
        return recalled

    # -- transferred priors ----------------------------------------------------------------------

    def study_priors(self, study_id: int) -> dict[str, tuple[float, float]] | None:
        """The effect priors (name -> (mean, sd)) the study started with; None if none recorded."""
        row = self._conn.execute(
            "SELECT priors_json FROM study_priors WHERE study_id = ?", (study_id,)
        ).fetchone()
        if row is None:
            return None
        return {name: (float(mean), float(sd)) for name, (mean, sd) in json.loads(row[0]).items()}

    def record_study_priors(
        self, study_id: int, priors: dict[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        """Record the effect priors a study starts with, once, and return the recorded ones: a
        second call keeps the first record, so a resumed study replays under the priors it
        started with whatever the shared memory has learnt since."""
        with self.transaction():
            self.study(study_id)
            self._conn.execute(
                "INSERT OR IGNORE INTO study_priors (study_id, priors_json, created) "
                "VALUES (?, ?, ?)",
                (study_id, _json({name: list(pair) for name, pair in priors.items()}), _now()),
            )
            return self.study_priors(study_id)  # type: ignore[return-value]
