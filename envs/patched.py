"""Patched runs of the gpt env: code-patch hypotheses, with the evaluation out of their reach.

A run whose configuration applies patches (unified diffs against MUTABLE_FILES) is made in its
own folder:
1. a working copy of the trainer's Python files, with the patches applied in declaration
   order, and the training split alone (no validation tokens, no corpus);
2. training: the copy's `python -m train`, confined (train.confine: files, memory, network,
   signals), which saves its weights instead of evaluating;
3. the copy's other files are hashed before and after: a run that changed them is refused;
4. evaluation: the engine's own `python -m train.judge`, which asks the copy's model for logits
   from another confined process, computes val_bpb and eval_hash with train.evaluate, and
   refuses a model that is not causal.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
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
from train.confine import confined, landlock_abi, library_folders
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
    abi = landlock_abi()
    if abi:
        return f"landlock ABI {abi} (files, network and signals) and RLIMIT_DATA"
    return "RLIMIT_DATA only: no Landlock here, so files, network and signals are not confined"


def _immutable_hashes(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in trainer_files(root)
            if path.relative_to(root).as_posix() not in MUTABLE_FILES}


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
        work = Path(folder)
        for path in trainer_files(PROJECT):
            relative = path.relative_to(PROJECT).as_posix()
            target = work / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(sources.get(relative, path.read_text()))
        before = _immutable_hashes(work)
        settings = build_config(knobs)
        data = prepare(settings.data, settings.text_column, settings.eval_tokens)
        write_training_split(work / "training-split.npz", data)
        (work / "config.json").write_text(json.dumps(to_dict(settings)))
        (work / "cache").mkdir()
        environment = {**os.environ, "PYTHONPATH": str(work),
                       "TRAIN_DATA_DIR": str(work / "cache"), "TMPDIR": str(work)}
        command = [sys.executable, "-P", "-m", "train", "--config", "config.json", *flags,
                   "--training-split", "training-split.npz", "--save-weights", "weights.pt"]
        read = library_folders(keep_out=[PROJECT, cache_dir()])

        def confine(argv: list[str]) -> list[str]:
            return confined(argv, read=read, write=[str(work)], memory_mb=memory_limit_mb)

        extra = {"code_hash": hash_files(trainer_files(work), work),
                 "confinement": confinement()}
        if guard_command:
            argv = guard_argv(guard_command, trainer=work, config=work / "config.json",
                              split=work / "training-split.npz")
            failed = run_guard(confine(argv), cwd=work, environment=environment,
                               timeout_s=timeout_s, owner=owner)
            if failed:
                return PatchedResult(ProcessResult(None, "", "", 0.0, False), None, extra,
                                     failed, guard_failed=True)
        trained = run_process(confine(command), cwd=work, timeout_s=timeout_s, env=environment,
                              owner=owner)
        changed = sorted(path for path, digest in _immutable_hashes(work).items()
                         if before.get(path) != digest)
        if changed:
            return PatchedResult(trained, None, extra,
                                 f"the run changed {', '.join(changed)} of its working copy "
                                 "(only train/model.py and train/optim.py are mutable)")
        if trained.returncode != 0 or not (work / "weights.pt").is_file():
            return PatchedResult(trained, None, extra)
        judged = run_process([sys.executable, "-P", "-m", "train.judge", "--config",
                              str(work / "config.json"), *flags, "--weights",
                              str(work / "weights.pt"), "--candidate", str(work),
                              "--memory-mb", str(memory_limit_mb)],
                             cwd=PROJECT, timeout_s=timeout_s, env=child_environment,
                             owner=owner)
        return PatchedResult(trained, judged, extra)
