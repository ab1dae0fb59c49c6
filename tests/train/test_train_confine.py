"""train.confine: a confined command reads only its libraries and its folder, writes only its
folder, connects nowhere, and meets its memory cap. Landlock is the kernel's; where it is
missing the file tests are skipped, and confine says so on stderr (tested)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from train.confine import (
    confined,
    kept_environment,
    landlock_abi,
    library_folders,
    parse,
    what_holds,
)

REPO = Path(__file__).resolve().parents[2]
needs_landlock = pytest.mark.skipif(landlock_abi() == 0, reason="no Landlock on this kernel")


def run_confined(code: str, work: Path, memory_mb: int = 0) -> subprocess.CompletedProcess:
    command = confined([sys.executable, "-P", "-c", code],
                       read=library_folders(keep_out=[REPO]), write=[str(work)],
                       memory_mb=memory_mb)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=work)


def test_library_folders_keep_out_any_folder_holding_the_project(tmp_path):
    folders = library_folders(keep_out=[REPO])
    assert not any(REPO.resolve().is_relative_to(folder) for folder in folders)
    assert str(Path(sys.prefix).resolve()) in folders or REPO.resolve().is_relative_to(
        Path(sys.prefix).resolve())


@needs_landlock
def test_the_confined_command_reads_its_folder_but_not_the_project(tmp_path):
    (tmp_path / "mine.txt").write_text("own")
    code = ("import pathlib\n"
            "print(pathlib.Path('mine.txt').read_text())\n"
            "pathlib.Path('out.txt').write_text('written')\n"
            f"try:\n    open({str(REPO / 'README.md')!r}).read(); print('LEAK')\n"
            "except PermissionError:\n    print('denied')\n")
    result = run_confined(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["own", "denied"]
    assert (tmp_path / "out.txt").read_text() == "written"


@needs_landlock
def test_the_confined_command_cannot_write_outside_or_connect(tmp_path):
    outside = tmp_path / "outside"
    work = tmp_path / "work"
    outside.mkdir()
    work.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    code = (f"import socket\ntry:\n    open({str(outside / 'x')!r}, 'w'); print('WROTE')\n"
            "except PermissionError:\n    print('no-write')\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), 5); print('CONNECTED')\n"
            "except PermissionError:\n    print('no-connect')\n")
    try:
        result = run_confined(code, work)
    finally:
        listener.close()
    assert result.stdout.split() == ["no-write", "no-connect"], result.stderr
    assert not (outside / "x").exists()


def test_the_memory_cap_stops_an_allocation_over_it(tmp_path):
    code = "b = bytearray(300 * 2**20)\nprint('allocated')"
    assert run_confined(code, tmp_path, memory_mb=0).stdout.strip() == "allocated"
    capped = run_confined(code, tmp_path, memory_mb=200)
    assert capped.returncode != 0 and "MemoryError" in capped.stderr


def test_without_landlock_confine_says_what_it_skipped(monkeypatch, capsys):
    import train.confine as confine

    executed = []
    monkeypatch.setattr(confine, "landlock_abi", lambda: 0)
    monkeypatch.setattr(confine.os, "execv", lambda path, argv: executed.append(argv))
    confine.main(["--memory-mb", "0", "--", "/bin/true"])
    assert executed == [["/bin/true"]]
    assert capsys.readouterr().err.startswith("confine: no Landlock")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="'--'"):
        parse(["--read", "/usr"])
    with pytest.raises(ValueError, match="unknown option"):
        parse(["--mystery", "1", "--", "true"])


@needs_landlock
def test_a_sitecustomize_on_the_path_runs_only_inside_the_walls(tmp_path):
    """The launcher is isolated (-I), so a sitecustomize.py that a confined process left on
    PYTHONPATH is first imported by the command, inside the confinement."""
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "escaped"
    (planted / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    work = tmp_path / "work"
    work.mkdir()
    command = confined([sys.executable, "-c", "print('ran')"],
                       read=[*library_folders(keep_out=[REPO]), str(planted)],
                       write=[str(work)], memory_mb=0)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=work,
                            env={**os.environ, "PYTHONPATH": str(planted)})
    assert not marker.exists(), result.stderr
    assert "PermissionError" in result.stderr  # the command's own import, denied


def test_a_confined_command_keeps_only_the_listed_environment():
    kept = kept_environment({"PATH": "/bin", "OPENAI_API_KEY": "secret", "TMPDIR": "/t"})
    assert kept == {"PATH": "/bin", "TMPDIR": "/t"}


def test_what_holds_names_each_abi_gap():
    assert "not truncation" in what_holds(2) and "not TCP" in what_holds(3)
    assert "not signals" in what_holds(5) and "signals and abstract sockets" in what_holds(6)
    assert what_holds(0).startswith("RLIMIT_DATA only")
