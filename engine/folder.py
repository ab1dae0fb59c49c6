"""The study folder: one study's, run by one process at a time, with a marker a reset can't fool.

- `FolderLock`: an exclusive `flock` on `<folder>/.lock`, held while a study runs; the file
  holds the holder's pid, so a second process is refused with a message naming it. The lock
  is the kernel's: it goes with the process, so a killed study leaves no stale lock behind.
- `study.json`, the marker: the study's name and id and the number of runs the ledger held
  at the end of the last concluded step. Written (atomically) after that step's transaction
  and a complete WAL checkpoint, so the main database file alone holds at least what the
  marker counts. Opening a folder checks it: a ledger with fewer runs than its marker (an
  emptied or replaced study.db) or a marker of another study is refused, never silently
  restarted. (The runs of a step not yet concluded live in study.db-wal until its end: losing
  that file loses only them, and they are run again.)
- `run_owner`: the tag the folder's run processes carry (envs.process), so that those a
  SIGKILLed study left running are found and killed when it resumes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented in the README)
    fcntl = None

MARKER = "study.json"
LOCK = ".lock"


def run_owner(folder: Path) -> str:
    """The owner tag of the folder's runs: one per folder, with no ":" in it."""
    return "study-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]


class FolderError(RuntimeError):
    """The study folder cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Marker:
    name: str
    study_id: int
    runs: int


def read_marker(folder: Path) -> Marker | None:
    path = folder / MARKER
    try:
        data = json.loads(path.read_text())
        return Marker(str(data["name"]), int(data["study_id"]), int(data["runs"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise FolderError(f"{path} is not a study marker ({exc}); it was edited or damaged. "
                          f"Restore it, or choose another --out") from None


def write_marker(folder: Path, marker: Marker) -> None:
    """Replace the marker atomically: a reader sees the old one or the new one, never half."""
    path, temporary = folder / MARKER, folder / f".{MARKER}.tmp"
    with open(temporary, "w") as handle:
        json.dump(asdict(marker), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def check_name(folder: Path, marker: Marker | None, name: str, first: str | None) -> None:
    """Refuse a folder that holds another study: by its marker, or (a folder of an older
    version, without one) by the first study its ledger holds. Later rows are not the folder's
    owner: a shared memory kept in the same file adds its own."""
    held = marker.name if marker is not None else first
    if held is not None and held != name:
        raise FolderError(f"{folder} holds study {held!r}, not {name!r}: one folder is one "
                          f"study's. Choose another --out (or [study] out_dir)")


def check_runs(folder: Path, marker: Marker | None, study_id: int | None, runs: int) -> None:
    """Refuse a ledger that lost what its marker counts, instead of starting over."""
    if marker is None or (study_id == marker.study_id and runs >= marker.runs):
        return
    found = "no record of the study" if study_id is None else f"{runs} runs"
    raise FolderError(
        f"{folder / 'study.db'} holds {found}, but the folder's marker ({MARKER}) records "
        f"{marker.runs} runs of study {marker.name!r}: the database was emptied or replaced, or "
        f"its -wal file was lost. Refusing to start over and lose them: restore study.db and "
        f"study.db-wal from a copy, or choose another --out")


class FolderLock:
    """An exclusive lock on the study folder for as long as a study runs in it."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        self._handle = None

    def __enter__(self) -> FolderLock:
        if fcntl is None:
            return self
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise FolderError(f"{self.path.parent} is in use by another study process "
                              f"(pid {holder}); wait for it to finish or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the flock
            self._handle = None
