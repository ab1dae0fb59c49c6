"""`[env] guard_command`: a check a configuration must pass before its runs count.

The autoresearch Guard, enforced by the engine: e.g. the trainer's own tests, or a smoke run of
a few steps. The template is shlex-split, then each argument is filled on its own and run
without a shell, in a folder of its own, with the placeholders `{python}` (this interpreter),
`{trainer}` (the folder holding the `train/` package the run uses: a patched run's working
copy, else the project), `{config}` (the run's config file) and `{split}` (the training split,
for a smoke run: `{python} -m train --config {config} --steps 2 --training-split {split}
--save-weights guard.pt`). It runs once per configuration per process, before the
configuration's first run; a configuration that fails it has every run `refused` with the
guard's reason, so its trial is reverted, never kept. A patched configuration's guard runs
confined like its training (envs.patched): the guard runs the patch's code too.
"""
from __future__ import annotations

import shlex
import string
import sys
from collections.abc import Mapping
from pathlib import Path

from envs.process import run_process

GUARD_PLACEHOLDERS = ("python", "trainer", "config", "split")
GUARD_OUTPUT_CHARS = 300  # of the guard's last output line kept in the reason


def guard_template_problem(template: str) -> str | None:
    """Why `template` cannot be a guard command, or None."""
    try:
        words = shlex.split(template)
        names = {name for word in words for _, name, _, _ in string.Formatter().parse(word)
                 if name is not None}
    except ValueError as exc:
        return f"is not a valid command template ({exc})"
    if not words:
        return "is empty"
    unknown = sorted(names - set(GUARD_PLACEHOLDERS))
    if unknown:
        return (f"uses placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; expected "
                f"{', '.join('{' + n + '}' for n in GUARD_PLACEHOLDERS)}")
    return None


def guard_argv(template: str, *, trainer: Path, config: Path, split: Path) -> list[str]:
    """The guard's argv for one configuration."""
    values = {"python": sys.executable, "trainer": str(trainer), "config": str(config),
              "split": str(split)}
    return [word.format(**values) for word in shlex.split(template)]


class GuardInterrupted(RuntimeError):
    """The study was interrupted while the guard ran: no verdict."""


def run_guard(argv: list[str], *, cwd: Path, environment: Mapping[str, str], timeout_s: float,
              owner: str) -> str | None:
    """None when the guard passes (exit 0), else why it did not, with its last output line."""
    result = run_process(argv, cwd=cwd, timeout_s=timeout_s, env=dict(environment), owner=owner)
    if result.killed:
        raise GuardInterrupted("killed: the study was interrupted")
    if result.timed_out:
        return f"the guard command timed out after {timeout_s:g} s"
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()
        last = lines[-1][:GUARD_OUTPUT_CHARS] if lines else "no output"
        return f"the guard command failed (exit status {result.returncode}): {last}"
    return None
