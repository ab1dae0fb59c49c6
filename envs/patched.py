"""Patched runs of the gpt env: code-patch hypotheses, with the evaluation out of their reach.

A run whose configuration applies patches (unified diffs against MUTABLE_FILES) is made in its
own folder:
1. a working copy of the trainer's Python files, with the patches applied in declaration
   order, and the training split alone (no validation tokens, no corpus), read-only to the
   patch's processes;
2. (with a guard) the guard, then training: the copy's `python -m train`, confined
   (train.confine: files, memory, network, signals, environment), which saves its weights
   instead of evaluating;
3. every file of the copy is hashed before and after: a run that changed one is refused;
4. evaluation: the engine's own `python -m train.judge`, which asks the copy's model for logits
   from other confined processes, computes val_bpb and eval_hash with train.evaluate, and
   refuses a model that is not causal.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.base import hash_files
from envs.guard import guard_argv, run_guard
from envs.patch import PatchError, apply_diffs
from envs.process import ProcessResult, run_process
from train.config import build_config, to_dict
from train.confine import confined, kept_environment, landlock_abi, library_folders, what_holds
from train.data import cache_dir, prepare, write_training_split

TRAIN_PACKAGE = Path(__file__).resolve().parent.parent / "train"
PROJECT = TRAIN_PACKAGE.parent
# The model and optimizer definition: the files a patch may edit, relative to the project.
MUTABLE_FILES = ("train/model.py", "train/optim.py")
PATCHES_KEY = "patches"  # in a run's config: the diffs it applies, in declaration order


def trainer_files(root: Path) -> list[Path]:
    """The trainer's Python files under `root` (a project or a working copy), not its data."""
    return sorted(path for path in (root / "train").rglob("*.py")
                  if "__pycache__" not in path.parts)


def pristine_sources() -> dict[str, str]:
    """The mutable files as the project has them."""
    return {path: (PROJECT / path).read_text() for path in MUTABLE_FILES}


def patch_problem(diffs: Sequence[str]) -> str | None:
    """Why `diffs`, applied in order to the pristine mutable files, do not make a trainer: a
    path outside MUTABLE_FILES, a malformed diff or a hunk that does not apply."""
    return _patch_problem(tuple(diffs))


@functools.lru_cache(maxsize=4096)  # the engine asks for every pair of patches at every step
def _patch_problem(diffs: tuple[str, ...]) -> str | None:
    try:
        apply_diffs(pristine_sources(), diffs)
    except PatchError as error:
        return str(error)
    return None


def confinement() -> str:
    """What confines a patched run on this machine, in words."""
    return what_holds(landlock_abi())


def code_hashes(root: Path, relatives: Sequence[str]) -> dict[str, str]:
    """sha256 of each file of `relatives` under `root`; "missing" for one that is gone and
    "not a plain file" for a link, FIFO or device in its place (never read: a FIFO would hang
    the engine, a link to /dev/zero fill its memory)."""
    hashes = {}
    for relative in relatives:
        path = root / relative
        hashes[relative] = (hashlib.sha256(path.read_bytes()).hexdigest() if _is_plain_file(path)
                            else "not a plain file" if os.path.lexists(path) else "missing")
    return hashes


def _is_plain_file(path: Path) -> bool:
    """Whether `path` is a regular file itself (not a link to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class PatchedResult:
    """The two processes of a patched run (judged is None when training failed or did not
    start), what the run's files were and why it is refused, if it is."""

    trained: ProcessResult
    judged: ProcessResult | None
    extra: dict[str, Any]
    refused: str | None = None
    guard_failed: bool = False  # the refusal is the guard's (a verdict on the configuration)


def run_patched(config: dict, seed: int, *, flags: list[str], timeout_s: float,
                memory_limit_mb: int, owner: str, child_environment: dict[str, str],
                guard_command: str = "") -> PatchedResult:
    """Make one patched run: `config` holds the knobs and PATCHES_KEY; `flags` the seed,
    backend and budget flags of both the trainer and the judge. A `guard_command` (envs.guard)
    checks the working copy first, confined like the training; one that fails refuses the
    run (`guard_failed`)."""
    knobs = {key: value for key, value in config.items() if key != PATCHES_KEY}
    sources = apply_diffs(pristine_sources(), config[PATCHES_KEY])
    with tempfile.TemporaryDirectory(prefix="gpt-patched-") as folder:
        # code/ holds the copy, config and split, which confined processes may only read;
        # out/ is the one folder the training may write (weights, caches, temporary files);
        # judge/ is the judge's, which no confined process may read or list.
        work, out, scratch = (Path(folder) / name for name in ("code", "out", "judge"))
        scratch.mkdir()
        relatives = [p.relative_to(PROJECT).as_posix() for p in trainer_files(PROJECT)]
        for relative in relatives:
            target = work / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(sources.get(relative, (PROJECT / relative).read_text()))
        settings = build_config(knobs)
        data = prepare(settings.data, settings.text_column, settings.eval_tokens)
        write_training_split(work / "training-split.npz", data)
        (work / "config.json").write_text(json.dumps(to_dict(settings)))
        (out / "cache").mkdir(parents=True)
        before = code_hashes(work, [*relatives, "config.json", "training-split.npz"])
        environment = kept_environment({**os.environ, "PYTHONPATH": str(work),
                                        "TRAIN_DATA_DIR": str(out / "cache"),
                                        "TMPDIR": str(out)})
        weights = out / "weights.pt"
        command = [sys.executable, "-P", "-m", "train", "--config", "config.json", *flags,
                   "--training-split", "training-split.npz", "--save-weights", str(weights)]
        read = [*library_folders(keep_out=[PROJECT, cache_dir()]), str(work)]

        def confine(argv: list[str]) -> list[str]:
            return confined(argv, read=read, write=[str(out)], memory_mb=memory_limit_mb)

        extra = {"code_hash": hash_files(trainer_files(work), work),
                 "confinement": confinement()}
        if guard_command:
            argv = guard_argv(guard_command, trainer=work, config=work / "config.json",
                              split=work / "training-split.npz")
            failed = run_guard(confine(argv), cwd=out, environment=environment,
                               timeout_s=timeout_s, owner=owner)
            if failed:
                return PatchedResult(ProcessResult(None, "", "", 0.0, False), None, extra,
                                     failed, guard_failed=True)
        trained = run_process(confine(command), cwd=work, timeout_s=timeout_s, env=environment,
                              owner=owner)
        after = code_hashes(work, list(before))
        changed = sorted(path for path, digest in after.items() if before[path] != digest)
        if changed:
            return PatchedResult(trained, None, extra,
                                 f"the run changed {', '.join(changed)} of its working copy "
                                 "(its code, config and data are read-only to it)")
        if trained.returncode != 0 or not _is_plain_file(weights):
            return PatchedResult(trained, None, extra)
        judged = run_process([sys.executable, "-P", "-m", "train.judge", "--config",
                              str(work / "config.json"), *flags, "--weights", str(weights),
                              "--candidate", str(work), "--scratch", str(scratch),
                              "--memory-mb", str(memory_limit_mb)],
                             cwd=PROJECT, timeout_s=timeout_s,
                             env=kept_environment(child_environment), owner=owner)
        return PatchedResult(trained, judged, extra)
