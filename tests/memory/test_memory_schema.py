"""Schema versions: a real v1 database migrates forward after a backup; newer ones are refused."""

import json
import re
import sqlite3

import pytest

from memory import Ledger, SchemaTooNewError
from memory.schema import SCHEMA_VERSION, build_schema_v1, migrate_v1_to_v2
from train.vocabulary import ROLES, RUN_STATUSES, VERDICTS


def make_v1_database(path):
    """A database exactly as the version-1 code wrote it, with one study, run and decision."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    build_schema_v1(conn)
    conn.execute("INSERT INTO studies (name, config_json, env_fingerprint, seed, started, status) "
                 "VALUES ('old', '{}', 'env', 3, '2026-01-01T00:00:00+00:00', 'finished')")
    conn.execute("INSERT INTO runs (study_id, step, slot, role, hypotheses_json, config_json, "
                 "seed, metric, status) VALUES (1, 0, 0, 'base', '[]', '{}', 11, 1.5, 'ok')")
    conn.execute("INSERT INTO decisions (study_id, step, hypothesis, verdict, n_runs, reason, "
                 "created) VALUES (1, 1, 'rope', 'keep', 4, 'p>0.95', '2026-01-01T00:00:00+00:00')")
    conn.execute("COMMIT")
    conn.close()


def tables(path):
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_v1_database_migrates_after_writing_a_backup(tmp_path):
    path = tmp_path / "study.db"
    make_v1_database(path)
    assert "episodes" not in tables(path)
    with Ledger(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION == 5
        (run,) = ledger.runs(1)
        assert (run["metric"], run["seed"], run["eval_hash"], run["extra"]) == (1.5, 11, None, {})
        assert ledger.decisions(1)[0]["hypothesis"] == "rope"
        ledger.record_episode(study_id=1, env_fingerprint="env", hypothesis="rope",
                              category="arch", outcome={})  # the new tables work
    backup = tmp_path / "study.db.bak-v1"
    assert backup.exists()
    conn = sqlite3.connect(backup)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
    assert conn.execute("SELECT metric FROM runs").fetchall() == [(1.5,)]
    conn.close()
    assert "episodes" not in tables(backup)
    with Ledger(path) as reopened:  # already current: opens without migrating again
        assert len(reopened.episodes()) == 1


def make_v2_database(path):
    """A shared memory as the version-2 code wrote it: one active insight, with no source."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    build_schema_v1(conn)
    migrate_v1_to_v2(conn)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.execute("INSERT INTO insights (env_fingerprint, kind, subject, statement, mean, lo, hi, "
                 "evidence, unit, t_created, active) VALUES ('env', 'effect', 'rope', "
                 "'rope helps', -0.02, -0.03, -0.01, 15, 'bpb', 0, 1)")
    conn.execute("INSERT INTO insight_presentations (insight_id, t) VALUES (1, 0)")
    conn.execute("COMMIT")
    conn.close()


def columns(path, table: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    finally:
        conn.close()


def test_v2_insights_get_an_empty_source_and_sources_then_coexist(tmp_path):
    path = tmp_path / "memory.db"
    make_v2_database(path)
    with Ledger(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION == 5
        (old,) = ledger.insights()
        assert (old.source, old.evidence, old.active, old.presentations) == ("", 15, True, (0.0,))
        new = ledger.upsert_insight(env_fingerprint="env", kind="effect", subject="rope",
                                    statement="rope helps a little", mean=-0.01, lo=-0.05,
                                    hi=0.03, evidence=2, unit="bpb", source="s @ /out")
        assert [insight.id for insight in ledger.insights()] == [old.id, new]
        study = ledger.start_study("s @ /out", {}, "env", 0)
        assert ledger.record_study_priors(study, {"rope": (-0.02, 0.01)}) == {
            "rope": (-0.02, 0.01)}  # the new table works
    with pytest.raises(sqlite3.IntegrityError):  # still one active row per source
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO insights (env_fingerprint, kind, subject, statement, "
                         "evidence, unit, t_created, active, source) VALUES ('env', 'effect', "
                         "'rope', 'again', 1, 'bpb', 0, 1, 's @ /out')")
    backup = tmp_path / "memory.db.bak-v2"
    assert "source" not in columns(backup, "insights") and "study_priors" not in tables(backup)
    assert "source" in columns(path, "insights")


def test_newer_database_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "study.db"
    Ledger(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(SchemaTooNewError, match=rf"version 7.*at most version {SCHEMA_VERSION}"):
        Ledger(path)


def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="photos"):
        Ledger(path)


def check_values(path, table: str, column: str) -> tuple[str, ...]:
    """The values a CHECK (column IN (...)) constraint of a table allows, in their written order."""
    conn = sqlite3.connect(path)
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    finally:
        conn.close()
    found = re.search(rf"\b{column} TEXT NOT NULL CHECK \({column} IN \(([^)]*)\)\)", sql)
    assert found, f"no CHECK on {table}.{column}"
    return tuple(value.strip().strip("'") for value in found.group(1).split(","))


def test_the_check_constraints_spell_the_shared_vocabulary(tmp_path):
    # The SQL keeps its literal text (a changed CREATE TABLE would need a migration), so this
    # test is what keeps it equal to train.vocabulary, which everything else imports.
    path = tmp_path / "study.db"
    Ledger(path).close()
    assert check_values(path, "runs", "role") == ROLES
    assert check_values(path, "runs", "status") == RUN_STATUSES
    assert check_values(path, "decisions", "verdict") == VERDICTS


def test_the_views_join_each_run_to_its_move_and_to_each_hypothesis_it_applied(tmp_path):
    """Checked against the runs and plans tables read back and joined here in Python."""
    path = tmp_path / "study.db"
    with Ledger(path) as ledger:
        study = ledger.start_study("s", {}, "env", 0)
        ledger.plan_step(study, 0, action={"kind": "base", "hypothesis": None, "n_runs": 1})
        ledger.plan_step(study, 1, action={"kind": "run", "hypothesis": "a + b", "n_runs": 1})
        for step, slot, role, applied, metric in [(0, 0, "base", [], 1.0),
                                                  (1, 0, "candidate", ["a", "b"], 0.8),
                                                  (1, 1, "incumbent", [], 1.1)]:
            ledger.record_run(study, step, slot, role=role, hypotheses=applied, config={},
                              seed=slot, metric=metric, status="ok")
    conn = sqlite3.connect(path)
    try:
        plans = {step: json.loads(action) for step, action in
                 conn.execute("SELECT step, action_json FROM plans")}
        runs = conn.execute("SELECT step, slot, role, hypotheses_json, metric FROM runs "
                            "ORDER BY step, slot").fetchall()
        assert conn.execute("SELECT step, slot, role, plan_kind, move, metric FROM run_moves "
                            "ORDER BY step, slot").fetchall() == [
            (step, slot, role, plans[step]["kind"], plans[step]["hypothesis"], metric)
            for step, slot, role, _, metric in runs]
        assert sorted(conn.execute("SELECT step, slot, hypothesis FROM hypothesis_runs")) == \
            sorted((step, slot, name) for step, slot, _, applied, _ in runs
                   for name in json.loads(applied))
    finally:
        conn.close()


def roll_back(path, version: int, statements: list[str]) -> None:
    """Undo what the migrations after `version` built, and mark the ledger at `version`."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        conn.execute(statement)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.close()


V5_TABLES = ["DROP TABLE proposals", "DROP TABLE proposer_calls"]


def test_a_v3_ledger_gains_the_views(tmp_path):
    path = tmp_path / "study.db"
    Ledger(path).close()
    roll_back(path, 3, ["DROP VIEW run_moves", "DROP VIEW hypothesis_runs", *V5_TABLES])
    with Ledger(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    views = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    conn.close()
    assert views == {"run_moves", "hypothesis_runs"}


def test_a_v4_ledger_gains_the_proposer_tables_and_keeps_its_runs(tmp_path):
    path = tmp_path / "study.db"
    with Ledger(path) as ledger:
        study = ledger.start_study("s", {"config": {}}, "env", 0)
        ledger.record_run(study, 0, 0, role="base", hypotheses=[], config={}, seed=1,
                          status="ok", metric=1.0)
    roll_back(path, 4, V5_TABLES)
    with Ledger(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert len(ledger.runs(study)) == 1
        call = ledger.record_proposer_call(study, 1, outcome="answered", cost_usd=0.5,
                                           accepted=["a"], refused=["'b': bad"])
        ledger.record_proposer_call(study, 2, outcome="not made", cost_usd=0.0,
                                    reason="budget spent")
        assert call == 1 and ledger.proposer_spend(study) == (1, 0.5)
        assert ledger.proposals(study) == [
            {"step": 1, "outcome": "accepted", "name": "a", "reason": ""},
            {"step": 1, "outcome": "refused", "name": None, "reason": "'b': bad"}]
