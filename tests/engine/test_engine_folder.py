"""One folder is one study's: locked while it runs, refused when its ledger lost what its
marker counts or when it holds another study, and finished only once its outputs exist."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import engine.plots
from engine.config import load_config
from engine.folder import MARKER, FolderError, FolderLock, Marker, read_marker, write_marker
from engine.study import Study, main

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
[study]
name = "{name}"
seed = 2
budget_trials = 12
base_runs = 2

[env]
kind = "synthetic"
n_hypotheses = 3
effect_size = 1.0
noise_sd = 0.5
world_seed = 1

[beliefs]
fit_pymc = false
"""


def config(tmp_path: Path, name: str = "first"):
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(CONFIG.format(name=name)))
    return path


def status(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("select status from studies").fetchone()[0]


def test_the_marker_counts_the_runs_of_every_concluded_step(tmp_path):
    out = tmp_path / "out"
    study = Study(load_config(config(tmp_path), out_dir=str(out)))
    study.run(write_report=False)
    marker = read_marker(out)
    assert (marker.name, marker.study_id, marker.runs) == ("first", study.study_id, 12)


@pytest.mark.parametrize("damage", ["empty file", "no file"])
def test_a_ledger_that_lost_its_runs_is_refused_not_restarted(tmp_path, damage, capsys):
    out = tmp_path / "out"
    path = config(tmp_path)
    assert main([str(path), "--out", str(out), "--quiet"]) == 0
    db = out / "study.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if damage == "empty file":
        db.write_bytes(b"")
    capsys.readouterr()
    assert main([str(path), "--out", str(out), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "records 12 runs of study 'first'" in message and "Refusing to start over" in message


def test_another_studys_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(config(tmp_path, "first")), "--out", str(out), "--quiet"]) == 0
    report = (out / "report.md").read_text()
    assert main([str(config(tmp_path, "second")), "--out", str(out), "--quiet"]) == 2
    assert "holds study 'first', not 'second'" in capsys.readouterr().err
    assert (out / "report.md").read_text() == report  # the first study's outputs are untouched
    (out / MARKER).unlink()  # the ledger alone still says whose folder it is
    with pytest.raises(FolderError, match="holds study 'first'"):
        Study(load_config(config(tmp_path, "second"), out_dir=str(out)))


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from engine.folder import FolderLock\n"
         "with FolderLock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
         str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([str(config(tmp_path)), "--out", str(out), "--quiet"]) == 2
        assert f"in use by another study process (pid {holder.pid})" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main([str(config(tmp_path)), "--out", str(out), "--quiet"]) == 0  # the lock died with it
    with FolderLock(out):  # and is free again once a study is done
        pass


def test_a_signal_while_the_outputs_are_written_stops_and_the_resume_writes_them(
        tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = load_config(config(tmp_path), out_dir=str(out))
    real_forest = engine.plots.plot_forest

    def forest_then_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs here
        return real_forest(*args, **kwargs)

    monkeypatch.setattr(engine.plots, "plot_forest", forest_then_sigterm)
    result = Study(cfg).run(handle_signals=True)  # as the CLI runs it
    assert result.status == "stopped" and status(out / "study.db") == "stopped"
    assert not (out / "report.md").exists()
    monkeypatch.setattr(engine.plots, "plot_forest", real_forest)
    result = Study(cfg).run()
    assert result.status == "finished" and status(out / "study.db") == "finished"
    assert (out / "report.md").exists() and result.runs_used == 12


def test_a_stale_or_missing_marker_never_refuses_a_legitimate_resume(tmp_path):
    """A kill between a step's transaction and its marker leaves a marker that counts fewer
    runs; a folder of an older version has none. Both resume, and get their marker back."""
    out = tmp_path / "out"
    path = config(tmp_path)
    assert main([str(path), "--out", str(out), "--quiet"]) == 0
    marker = read_marker(out)
    write_marker(out, Marker(marker.name, marker.study_id, 2))
    assert main([str(path), "--out", str(out), "--quiet"]) == 0
    assert read_marker(out) == marker
    (out / MARKER).unlink()
    assert main([str(path), "--out", str(out), "--quiet"]) == 0
    assert read_marker(out) == marker


def test_a_shared_memory_kept_in_the_studys_own_ledger_does_not_lock_it_out(tmp_path):
    out = tmp_path / "out"
    path = config(tmp_path)
    path.write_text(path.read_text() + f'\n[memory]\npath = "{out / "study.db"}"\n')
    assert main([str(path), "--out", str(out), "--quiet"]) == 0
    assert main([str(path), "--out", str(out), "--quiet"]) == 0
