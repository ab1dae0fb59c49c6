"""run_process kills everything a run started, and nothing else: real processes, each test fast."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from envs.process import TAG_VARIABLE, kill_running, run_process, sweep
from tests.processes import HAS_PROC, is_running

linux_only = pytest.mark.skipif(not HAS_PROC, reason="needs /proc to find processes by tag")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]


def dies_soon(pid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not is_running(pid)


@pytest.fixture
def pid_file(tmp_path):
    """Where a test's script writes a descendant's pid; that process is killed at teardown."""
    path = tmp_path / "descendant.pid"
    yield path
    if path.exists() and path.read_text():
        try:
            os.kill(int(path.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_script(tmp_path: Path, code: str, timeout_s: float = 6.0, **kwargs):
    script = tmp_path / "script.py"
    script.write_text(code)
    started = time.monotonic()
    result = run_process([sys.executable, str(script)], cwd=tmp_path, timeout_s=timeout_s,
                         **kwargs)
    return result, time.monotonic() - started


def test_a_background_child_holding_stdout_does_not_make_a_finished_run_a_timeout(
        tmp_path, pid_file):
    result, seconds = run_script(tmp_path, (
        "import subprocess, sys\n"
        f"child = subprocess.Popen({SLEEPER!r})  # inherits stdout and stderr\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('loss: 1.0')\n"
    ))
    assert not result.timed_out and not result.killed
    assert result.returncode == 0
    assert "loss: 1.0" in result.stdout
    assert seconds < 3
    assert dies_soon(int(pid_file.read_text()))


@linux_only
def test_a_grandchild_in_its_own_session_dies_with_the_run(tmp_path, pid_file):
    result, _ = run_script(tmp_path, (
        "import subprocess\n"
        f"child = subprocess.Popen({SLEEPER!r}, start_new_session=True,\n"
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('loss: 1.0')\n"
    ))
    assert result.returncode == 0 and "loss: 1.0" in result.stdout
    assert dies_soon(int(pid_file.read_text()))


@linux_only
def test_a_double_forked_daemon_dies_with_the_run(tmp_path, pid_file):
    result, _ = run_script(tmp_path, (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    daemon = os.fork()\n"
        "    if daemon == 0:\n"
        "        devnull = os.open(os.devnull, os.O_RDWR)\n"
        "        for fd in (0, 1, 2):\n"
        "            os.dup2(devnull, fd)\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        f"    open({str(pid_file)!r}, 'w').write(str(daemon))\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print('loss: 1.0')\n"
    ))
    assert result.returncode == 0 and "loss: 1.0" in result.stdout
    assert dies_soon(int(pid_file.read_text()))


def test_the_run_tag_is_added_to_the_given_environment(tmp_path):
    result, _ = run_script(tmp_path, (
        "import os\n"
        f"print(os.environ['FOO'], os.environ[{TAG_VARIABLE!r}])\n"
    ), env={"FOO": "bar"}, owner="study-1")
    foo, tag = result.stdout.split()
    assert foo == "bar"
    assert tag.startswith("study-1:") and len(tag) > len("study-1:")


@linux_only
def test_sweep_kills_the_orphans_of_one_owner_only():
    owner = f"test-{uuid.uuid4().hex}"

    def tagged_sleeper(tag: str) -> subprocess.Popen:
        return subprocess.Popen(SLEEPER, env={**os.environ, TAG_VARIABLE: tag},
                                start_new_session=True)

    orphan = tagged_sleeper(f"{owner}:left-over")  # as if from a SIGKILLed study
    other = tagged_sleeper(f"{owner}2:running")  # another owner, whose name extends this one
    try:
        assert sweep(owner + ":") == 1
        assert orphan.wait(timeout=3) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for process in (orphan, other):
            process.kill()
            process.wait()


def test_kill_running_stops_a_run_in_another_thread(tmp_path):
    results = []
    worker = threading.Thread(target=lambda: results.append(
        run_process(SLEEPER, cwd=tmp_path, timeout_s=30)))
    worker.start()
    deadline = time.monotonic() + 5
    while kill_running() == 0 and time.monotonic() < deadline:  # 0 until the run has started
        time.sleep(0.01)
    worker.join(timeout=3)
    assert not worker.is_alive()
    [result] = results
    assert result.killed and not result.timed_out
    assert result.returncode == -signal.SIGKILL
    assert result.seconds < 5


def test_a_hanging_run_times_out_and_its_group_is_killed(tmp_path, pid_file):
    result, seconds = run_script(tmp_path, (
        "import subprocess, time\n"
        f"child = subprocess.Popen({SLEEPER!r})\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(30)\n"
    ), timeout_s=2.0)
    assert result.timed_out and result.returncode is None and not result.killed
    assert result.stdout == "started\n"  # what was printed before the kill is kept
    assert seconds < 5
    assert dies_soon(int(pid_file.read_text()))


def test_a_program_that_cannot_start_is_status_127(tmp_path):
    result = run_process(["/no/such/program"], cwd=tmp_path, timeout_s=1)
    assert result.returncode == 127 and not result.timed_out
    assert "could not start" in result.stderr
