"""Crash safety and concurrent writers, with real processes.

Writers are forked from the test process (multiprocessing "fork"), so each starts in
milliseconds with the package already imported; SIGKILL still kills a real OS process that holds
its own SQLite connection, exactly as a killed engine would.
"""

import multiprocessing
import os
import signal
import sqlite3
import sys
import traceback

import numpy as np
import pytest

from memory import Ledger

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL")

FORK = multiprocessing.get_context("fork")
RUNS_PER_STEP = 3
STUDY_CONFIG = {"budget_trials": 10**9}


def write_steps_until_killed(path, ready):
    """Resume the study and write steps forever, each one transaction of runs + decision +
    episode + step row (as the engine does)."""
    ledger = Ledger(path)
    study = ledger.start_study("crash", STUDY_CONFIG, "env", 0)
    step = (ledger.last_step(study) or 0) + 1
    ready.set()
    while True:
        with ledger.transaction():
            for slot in range(RUNS_PER_STEP):
                ledger.record_run(study, step, slot, role="candidate", hypotheses=[f"h{step}"],
                                  config={f"h{step}": True}, seed=slot, status="ok",
                                  metric=step + slot / 10)
            ledger.record_decision(study, step, f"h{step}", "revert", n_runs=RUNS_PER_STEP)
            ledger.record_episode(study_id=study, env_fingerprint="env", hypothesis=f"h{step}",
                                  category="c", outcome={"step": step})
            ledger.record_step(study, step, action={"hypothesis": f"h{step}"}, appraisal={},
                               incumbent={})
        step += 1


def assert_consistent(path):
    """Every recorded step is complete, nothing belongs to an unrecorded step, no duplicates."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        steps = [row[0] for row in conn.execute("SELECT step FROM steps ORDER BY step")]
        assert steps == list(range(1, len(steps) + 1))  # resumed without gaps or repeats
        per_step = dict(conn.execute("SELECT step, count(*) FROM runs GROUP BY step"))
        assert per_step == {step: RUNS_PER_STEP for step in steps}
        distinct = conn.execute("SELECT count(DISTINCT study_id || '/' || step || '/' || slot) "
                                "FROM runs").fetchone()[0]
        assert distinct == RUNS_PER_STEP * len(steps)
        decided = [row[0] for row in conn.execute("SELECT step FROM decisions ORDER BY step")]
        assert decided == steps
        episodes = conn.execute("SELECT count(*) FROM episodes").fetchone()[0]
        presentations = conn.execute("SELECT count(*) FROM episode_presentations").fetchone()[0]
        assert episodes == presentations == len(steps)
        return len(steps)
    finally:
        conn.close()


def test_sigkill_at_random_points_never_leaves_a_partial_step(tmp_path):
    path = tmp_path / "study.db"
    Ledger(path).close()
    rng = np.random.default_rng(20260523)
    recorded = 0
    for _ in range(50):
        ready = FORK.Event()
        writer = FORK.Process(target=write_steps_until_killed, args=(path, ready))
        writer.start()
        assert ready.wait(timeout=60), "writer never started"
        writer.join(timeout=float(rng.uniform(0.0, 0.05)))
        assert writer.is_alive(), f"writer exited on its own with code {writer.exitcode}"
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert writer.exitcode == -signal.SIGKILL
        now = assert_consistent(path)
        assert now >= recorded  # committed steps are never lost
        recorded = now
    print(f"\n50 SIGKILLs: {recorded} complete steps survived, every reopen consistent")
    assert recorded >= 50, f"only {recorded} steps in 50 writer lifetimes: kills hit nothing"
    with Ledger(path) as ledger:  # and the ledger itself reopens and reads
        assert len(ledger.runs(1)) == RUNS_PER_STEP * recorded


def write_runs_concurrently(path, writer_index, n_runs, barrier, errors):
    try:
        ledger = Ledger(path)
        barrier.wait(timeout=60)
        study = ledger.start_study("parallel", STUDY_CONFIG, "env", 0)  # both get the same id
        for step in range(n_runs):
            with ledger.transaction():
                ledger.record_run(study, step, writer_index, role="candidate", hypotheses=["h"],
                                  config={"h": True}, seed=step, status="ok", metric=float(step))
                ledger.record_episode(study_id=study, env_fingerprint="env", hypothesis="h",
                                      category="c", outcome={"writer": writer_index})
            ledger.recall(2)  # a read-then-write transaction as well
        ledger.close()
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def test_two_concurrent_writers_lose_nothing_and_never_see_a_lock_error(tmp_path):
    path = tmp_path / "study.db"
    Ledger(path).close()
    n_runs = 150
    barrier, errors = FORK.Barrier(2), FORK.SimpleQueue()
    writers = [FORK.Process(target=write_runs_concurrently, args=(path, index, n_runs, barrier,
                                                                  errors)) for index in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, "\n".join(failures)
    assert [writer.exitcode for writer in writers] == [0, 0]
    with Ledger(path) as ledger:
        runs = ledger.runs(1)
        assert sorted((run["step"], run["slot"]) for run in runs) == [
            (step, slot) for step in range(n_runs) for slot in range(2)]
        assert len(ledger.episodes()) == 2 * n_runs
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM studies").fetchone() == (1,)  # no racing duplicate
    conn.close()
