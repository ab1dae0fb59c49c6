"""Running a child process with a hard timeout, shared by the `gpt` and `command` envs.

Arguments are always a list and never go through a shell. Each run gets its own session (process
group) and a tag, `ENGINE_RUN_TAG=<owner>:<uuid>`, in its environment, which its descendants
inherit. When the child exits, times out, is interrupted or is killed by kill_running(), every
process of the run is SIGKILLed, so that nothing outlives it (a trainer's data-loader workers, a
shell script's children, a background job that still holds stdout).

What is caught: the run's session/process group; on Linux also any descendant that kept the tag
in its environment, even after setsid or a double fork (found by scanning /proc/*/environ).
What is not: a descendant that clears or replaces its environment, or runs as another user; on
macOS (no /proc) anything that left the process group.

sweep(owner + ":") kills the leftovers of one owner's runs, such as the children of a study that
was itself SIGKILLed; an owner should therefore not contain ":" (or be a prefix of another).
"""
from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

TAG_VARIABLE = "ENGINE_RUN_TAG"
# How long to wait for the pipes to close after the run was killed; a descendant that escaped
# both the group and the tag sweep could otherwise hold them open forever.
_DRAIN_SECONDS = 5.0
# Tag sweeps per kill: a process forked while /proc was being scanned is caught by the next one.
_SWEEP_PASSES = 3
# Characters of stderr kept in Outcome.extra when a run fails.
STDERR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class ProcessResult:
    returncode: int | None  # None when the process was killed on timeout
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool
    killed: bool = False  # killed by kill_running()


@dataclass
class _Run:
    process: subprocess.Popen
    tag: str
    killed: bool = False


# The runs in flight in this Python process, by tag, for kill_running().
_live: dict[str, _Run] = {}
_live_lock = threading.Lock()


def sweep(tag_prefix: str) -> int:
    """SIGKILL every process (but this one) whose run tag starts with tag_prefix; the count.

    Linux only: without /proc this finds nothing and returns 0.
    """
    if not tag_prefix:
        raise ValueError("sweep needs a non-empty tag prefix (it would kill every tagged run)")
    proc = Path("/proc")
    if not proc.is_dir():
        return 0
    needle = f"{TAG_VARIABLE}={tag_prefix}".encode()
    killed = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()  # empty for a zombie
        except OSError:  # vanished, or another user's
            continue
        if any(variable.startswith(needle) for variable in environ.split(b"\0")):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def _kill(run: _Run) -> None:
    """SIGKILL the run's process group and every process carrying its tag."""
    try:
        os.killpg(run.process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is already gone
        pass
    for _ in range(_SWEEP_PASSES):
        if not sweep(run.tag):
            break


def kill_running() -> int:
    """Kill every run in flight in this Python process, from any thread; how many there were.

    Their run_process calls then return promptly with killed=True.
    """
    # Holding the lock also keeps new runs from starting until these are dead.
    with _live_lock:
        for run in _live.values():
            run.killed = True
            _kill(run)
        return len(_live)


def _read_into(pipe: IO[str], chunks: list[str]) -> threading.Thread:
    """Read pipe line by line into chunks on a daemon thread, so output read so far is kept
    even if an escaped descendant never closes the pipe."""
    def read() -> None:
        with pipe:
            for line in pipe:
                chunks.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


# Environment variables for the processes started in this context (thread): the parallel
# runner sets a run's device here (CUDA_VISIBLE_DEVICES) without the env knowing of devices.
RUN_ENVIRONMENT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "RUN_ENVIRONMENT", default={})


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    owner: str = "",
) -> ProcessResult:
    """Run argv (no shell) in cwd, tagged `owner:<uuid>`; kill all of it once the child exits,
    after timeout_s seconds, on Ctrl-C, or on kill_running()."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    tag = f"{owner}:{uuid.uuid4().hex}"
    started = time.monotonic()
    try:
        # Under the lock, so that kill_running() never misses a run that is just starting.
        with _live_lock:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env={**(os.environ if env is None else env), **RUN_ENVIRONMENT.get(),
                     TAG_VARIABLE: tag},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            run = _live[tag] = _Run(process, tag)
    except OSError as exc:  # no such program, not executable, no such cwd: a failed run
        return ProcessResult(returncode=127, stdout="",
                             stderr=f"could not start {argv[0]!r} in {cwd}: {exc.strerror or exc}",
                             seconds=time.monotonic() - started, timed_out=False)
    stdout: list[str] = []
    stderr: list[str] = []
    readers = [_read_into(process.stdout, stdout), _read_into(process.stderr, stderr)]
    try:
        # Wait for the child only, not for its pipes: a background descendant may hold them.
        try:
            process.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        process.kill()  # no-op once it has exited; catches a child that left its own group
        _kill(run)  # the stragglers, which then close the pipes at once
        process.wait()
        deadline = time.monotonic() + _DRAIN_SECONDS
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
    except BaseException:  # Ctrl-C or anything else: never leave the run going
        process.kill()
        _kill(run)
        process.wait()
        raise
    finally:
        with _live_lock:
            del _live[tag]
    return ProcessResult(
        returncode=None if timed_out else process.returncode,
        stdout="".join(stdout),
        stderr="".join(stderr),
        seconds=time.monotonic() - started,
        timed_out=timed_out,
        killed=run.killed,
    )


def tail(text: str, chars: int = STDERR_TAIL_CHARS) -> str:
    return text[-chars:]
