"""Running a child process with a hard timeout, shared by the `gpt` and `command` envs.

The child gets its own session (process group) so that a timeout or Ctrl-C kills everything it
started (a trainer's data-loader workers, a shell script's children), not just the top process.
Arguments are always a list and never go through a shell.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# How long to wait for the pipes to close after the group was killed; a grandchild that left the
# group could otherwise hold them open forever.
_DRAIN_SECONDS = 5.0
# Characters of stderr kept in Outcome.extra when a run fails.
STDERR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class ProcessResult:
    returncode: int | None  # None when the process was killed on timeout
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> ProcessResult:
    """Run argv (no shell) in cwd; kill its whole process group after timeout_s seconds."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:  # no such program, not executable, no such cwd: a failed run
        return ProcessResult(returncode=127, stdout="",
                             stderr=f"could not start {argv[0]!r} in {cwd}: {exc.strerror or exc}",
                             seconds=time.monotonic() - started, timed_out=False)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(process)
        try:
            stdout, stderr = process.communicate(timeout=_DRAIN_SECONDS)
        except subprocess.TimeoutExpired:
            process.wait()
            stdout, stderr = "", ""
        timed_out = True
    except BaseException:  # Ctrl-C or anything else: never leave the child running
        _kill_group(process)
        process.wait()
        raise
    seconds = time.monotonic() - started
    return ProcessResult(
        returncode=None if timed_out else process.returncode,
        stdout=stdout or "",
        stderr=stderr or "",
        seconds=seconds,
        timed_out=timed_out,
    )


def tail(text: str, chars: int = STDERR_TAIL_CHARS) -> str:
    return text[-chars:]
