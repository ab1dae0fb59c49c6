"""The ledger's schema and its migration chain.

A fresh database is built by replaying the chain from nothing: `build_schema_v1` (the original
ledger: studies, runs, steps, decisions), then every migration in order. So the migration path
is the code path every database takes, not a special case. Each step runs inside the caller's
transaction (SQLite DDL is transactional), so a crash mid-migration leaves the old version intact.
Statements run one at a time: `executescript` would commit the caller's transaction first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

#: The version this code writes and reads.
SCHEMA_VERSION = 5

_V1_STATEMENTS = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE studies (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        config_json TEXT NOT NULL,
        env_fingerprint TEXT NOT NULL,
        seed INTEGER NOT NULL,
        started TEXT NOT NULL,
        finished TEXT,
        status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'stopped', 'failed')),
        stop_reason TEXT
    )""",
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        step INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('candidate', 'incumbent', 'base')),
        hypotheses_json TEXT NOT NULL,
        config_json TEXT NOT NULL,
        seed INTEGER NOT NULL,
        metric REAL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'crash', 'timeout', 'nan', 'refused')),
        steps INTEGER,
        seconds REAL,
        backend TEXT,
        code_hash TEXT,
        started TEXT,
        finished TEXT,
        UNIQUE (study_id, step, slot)
    )""",
    """CREATE TABLE steps (
        study_id INTEGER NOT NULL REFERENCES studies(id),
        step INTEGER NOT NULL,
        action_json TEXT NOT NULL,
        appraisal_json TEXT NOT NULL,
        incumbent_json TEXT NOT NULL,
        finished TEXT NOT NULL,
        PRIMARY KEY (study_id, step)
    )""",
    """CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        step INTEGER NOT NULL,
        hypothesis TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('keep', 'revert', 'undecided')),
        p_better REAL,
        lo REAL,
        hi REAL,
        n_runs INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (study_id, step, hypothesis)
    )""",
)

_V2_STATEMENTS = (
    "ALTER TABLE runs ADD COLUMN eval_hash TEXT",
    "ALTER TABLE runs ADD COLUMN extra_json TEXT NOT NULL DEFAULT '{}'",
    # A step's plan is written before its runs start, so a resumed study finishes the same step.
    """CREATE TABLE plans (
        study_id INTEGER NOT NULL REFERENCES studies(id),
        step INTEGER NOT NULL,
        action_json TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY (study_id, step)
    )""",
    """CREATE TABLE episodes (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        env_fingerprint TEXT NOT NULL,
        hypothesis TEXT NOT NULL,
        category TEXT NOT NULL,
        outcome_json TEXT NOT NULL,
        surprise REAL,
        learntropy REAL,
        compression_progress REAL,
        t_created REAL NOT NULL
    )""",
    """CREATE TABLE episode_presentations (
        episode_id INTEGER NOT NULL REFERENCES episodes(id),
        t REAL NOT NULL
    )""",
    "CREATE INDEX episode_presentations_by_episode ON episode_presentations (episode_id)",
    """CREATE TABLE insights (
        id INTEGER PRIMARY KEY,
        env_fingerprint TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN
            ('effect', 'category_effect', 'interaction', 'dead_end', 'noise')),
        subject TEXT NOT NULL,
        statement TEXT NOT NULL,
        mean REAL,
        lo REAL,
        hi REAL,
        evidence INTEGER NOT NULL,
        unit TEXT NOT NULL,
        t_created REAL NOT NULL,
        active INTEGER NOT NULL CHECK (active IN (0, 1)),
        superseded_by INTEGER REFERENCES insights(id)
    )""",
    # At most one active insight per (env, kind, subject); superseded ones stay as history.
    """CREATE UNIQUE INDEX insights_active_key ON insights (env_fingerprint, kind, subject)
        WHERE active = 1""",
    """CREATE TABLE insight_presentations (
        insight_id INTEGER NOT NULL REFERENCES insights(id),
        t REAL NOT NULL
    )""",
    "CREATE INDEX insight_presentations_by_insight ON insight_presentations (insight_id)",
)

_V3_STATEMENTS = (
    # Insights are kept per source (the study that wrote them), so that priors pool the evidence
    # of several studies instead of the last writer's replacing it; older rows get source ''.
    "ALTER TABLE insights ADD COLUMN source TEXT NOT NULL DEFAULT ''",
    "DROP INDEX insights_active_key",
    """CREATE UNIQUE INDEX insights_active_key ON insights (env_fingerprint, kind, subject, source)
        WHERE active = 1""",
    # The effect priors a study started with, so that a resumed study replays under them.
    """CREATE TABLE study_priors (
        study_id INTEGER PRIMARY KEY REFERENCES studies(id),
        priors_json TEXT NOT NULL,
        created TEXT NOT NULL
    )""",
)


_V4_STATEMENTS = (
    # Each run beside the plan of its step: the move it tested (a hypothesis, a pair move
    # "a + b", or NULL for base and design steps) and the plan's kind, for plain queries such
    # as `SELECT move, role, avg(metric) FROM run_moves GROUP BY move, role`.
    """CREATE VIEW run_moves AS
    SELECT r.study_id, r.step, r.slot, r.role, r.seed, r.status, r.metric, r.seconds,
           r.started, r.finished, json_extract(p.action_json, '$.kind') AS plan_kind,
           json_extract(p.action_json, '$.hypothesis') AS move,
           r.hypotheses_json AS applied_json, r.config_json
    FROM runs r LEFT JOIN plans p ON p.study_id = r.study_id AND p.step = r.step""",
    # One row per run and hypothesis it applied: every run that bears on a hypothesis.
    """CREATE VIEW hypothesis_runs AS
    SELECT r.study_id, r.step, r.slot, r.role, r.seed, r.status, r.metric,
           applied.value AS hypothesis
    FROM runs r, json_each(r.hypotheses_json) AS applied""",
)


_V5_STATEMENTS = (
    # Every proposer call (an LLM's): made and answered, failed, or not made because the
    # study's LLM budget was spent; how many requests it took (a refused reply is asked
    # again) and what they cost.
    """CREATE TABLE proposer_calls (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        step INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('answered', 'failed', 'not made')),
        attempts INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        reason TEXT NOT NULL,
        created TEXT NOT NULL
    )""",
    # Every hypothesis a call offered: accepted (then it is in the step's plan too) or refused,
    # with the check that refused it.
    """CREATE TABLE proposals (
        id INTEGER PRIMARY KEY,
        call_id INTEGER NOT NULL REFERENCES proposer_calls(id),
        outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'refused')),
        name TEXT,
        reason TEXT NOT NULL
    )""",
)


def _run(conn: sqlite3.Connection, statements: tuple[str, ...]) -> None:
    for statement in statements:
        conn.execute(statement)


def build_schema_v1(conn: sqlite3.Connection) -> None:
    """Version 1: the ledger alone (meta, studies, runs, steps, decisions)."""
    _run(conn, _V1_STATEMENTS)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")


def migrate_v1_to_v2(conn: sqlite3.Connection) -> None:
    """Version 2: runs gain eval_hash and extra_json; step plans; episodic memory and insights."""
    _run(conn, _V2_STATEMENTS)


def migrate_v2_to_v3(conn: sqlite3.Connection) -> None:
    """Version 3: insights gain a source (one active per env, kind, subject and source; rows
    written before have source ''); the effect priors each study started with."""
    _run(conn, _V3_STATEMENTS)


def migrate_v3_to_v4(conn: sqlite3.Connection) -> None:
    """Version 4: the views run_moves (a run beside its step's move) and hypothesis_runs (a
    run per hypothesis it applied)."""
    _run(conn, _V4_STATEMENTS)


def migrate_v4_to_v5(conn: sqlite3.Connection) -> None:
    """Version 5: the proposer_calls and proposals tables (what an LLM was asked, what it cost,
    and what it offered, accepted or refused)."""
    _run(conn, _V5_STATEMENTS)


#: MIGRATIONS[v] takes a database at version v to version v + 1 (0 = empty file).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: build_schema_v1,
    1: migrate_v1_to_v2,
    2: migrate_v2_to_v3,
    3: migrate_v3_to_v4,
    4: migrate_v4_to_v5,
}


def read_schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in meta; 0 for an empty database. A foreign database is an error."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "meta" not in tables:
        raise ValueError(f"not a ledger database: it has tables {sorted(tables)} but no 'meta'")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise ValueError("ledger database has a 'meta' table with no schema_version row")
    return int(row[0])


def migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Apply every migration from `from_version` up to SCHEMA_VERSION (inside the caller's
    transaction)."""
    for version in range(from_version, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
    )
