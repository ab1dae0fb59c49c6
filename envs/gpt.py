"""The `gpt` env: one run = one `python -m train` subprocess, read through its summary block.

The run's config dict is written as JSON to a temporary file passed with --config; the seed,
backend and budget (--steps N when steps > 0, else --time-budget S) are flags. The evaluation
is immutable: the first successful run pins its eval_hash (or the engine passes the study's pin
back on resume) and any later run reporting another eval_hash is "refused".

What defines the experiment is pinned: the training data, the evaluation, the budget, the
backend and the seed (PINNED_KNOBS). `[env]` and `[env] base` set them; a hypothesis may change
only the other knobs of train.config.TrainConfig, and is refused before any run otherwise. The
trainer refuses (exit 3, a REFUSED line) training data that repeats the validation text.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from envs.base import (
    METRIC_LIMIT,
    Direction,
    Env,
    Outcome,
    check_direction,
    hash_files,
    register_env,
    stable_hash,
)
from envs.guard import GuardInterrupted, guard_argv, guard_template_problem, run_guard
from envs.patch import apply_diffs
from envs.patched import (
    PATCHES_KEY,
    PROJECT,
    TRAIN_PACKAGE,
    patch_problem,
    pristine_sources,
    run_patched,
)
from envs.process import ProcessResult, run_process, tail
from train.config import FIELD_TYPES, ConfigError, build_config
from train.data import prepare, write_training_split
from train.vocabulary import BACKENDS

# -P: the run's folder is not put first on sys.path, so a user's train.py or train/ beside the
# config cannot stand in for the engine's trainer (which PYTHONPATH names; Python 3.11+).
TRAINER_COMMAND = (sys.executable, "-P", "-m", "train")
_INTEGER_FIELDS = frozenset({"num_steps", "depth", "seed"})
_TEXT_FIELDS = frozenset({"eval_hash", "backend", "device_name"})

# The trainer knobs that define the experiment, with what each defines: every run of a study
# shares them, so a hypothesis may not change them (a change of `data` could train on the
# validation text, one of `steps` could escape the time budget).
PINNED_KNOBS: dict[str, str] = {
    "data": "the training data", "text_column": "the training data",
    "eval_seq_len": "the evaluation", "eval_tokens": "the evaluation",
    "steps": "the budget", "time_budget": "the budget", "untimed_steps": "the budget",
    "threads": "the budget (CPU threads)", "backend": "the backend", "seed": "the run's seed",
    "debug_nan_step": "a debugging switch",
}
# Set by [env] itself, so [env] base must not set them either.
ENV_OWNED_KNOBS: dict[str, str] = {"seed": "the engine (each run's seed)", "steps": "[env] steps",
                                   "time_budget": "[env] time_budget", "backend": "[env] backend"}
MUTABLE_KNOBS: tuple[str, ...] = tuple(k for k in FIELD_TYPES if k not in PINNED_KNOBS)


def knob_problem(key: object) -> str | None:
    """Why `key` is not a trainer knob at all, with the nearest knob's name, or None."""
    if key in FIELD_TYPES:
        return None
    close = difflib.get_close_matches(str(key), list(FIELD_TYPES), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (knobs: {', '.join(FIELD_TYPES)})"
    return f"{key!r} is not a trainer knob{hint}"


def parse_summary(stdout: str) -> dict[str, Any] | None:
    """The `key: value` lines after the last `---` line of stdout, typed; None if there is none.

    Known integer fields become int, eval_hash, backend and device_name stay text, everything
    else becomes a float when it parses as one and stays text otherwise.
    """
    lines = stdout.splitlines()
    separators = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not separators:
        return None
    summary: dict[str, Any] = {}
    for line in lines[separators[-1] + 1:]:
        key, colon, text = line.partition(":")
        key, text = key.strip(), text.strip()
        if not colon or not key:
            continue
        summary[key] = _typed(key, text)
    return summary or None


def _typed(key: str, text: str) -> Any:
    if key in _TEXT_FIELDS:
        return text
    try:
        return int(text) if key in _INTEGER_FIELDS else float(text)
    except ValueError:
        return text


def _line_starting(prefix: str, *streams: str) -> str | None:
    """The trainer's first line starting with prefix (FAIL: a NaN or exploding loss; REFUSED:
    leaked validation text), if it printed one."""
    for stream in streams:
        for line in stream.splitlines():
            if line.startswith(prefix):
                return line.strip()
    return None


def _steps(summary: dict[str, Any]) -> int | None:
    steps = summary.get("num_steps")
    return steps if isinstance(steps, int) else None


def _failed(result: ProcessResult, extra: dict[str, Any], status: str, reason: str) -> Outcome:
    return Outcome(None, status, result.seconds, _steps(extra),
                   {**extra, "reason": reason, "stderr_tail": tail(result.stderr)})


def train_code_hash() -> str:
    """Hash of the train/ package's Python sources (what a run's code was)."""
    return hash_files(list(TRAIN_PACKAGE.rglob("*.py")), TRAIN_PACKAGE)


@register_env
class GptEnv(Env):
    """Trains the GPT of train/ in a subprocess per run."""

    kind: ClassVar[str] = "gpt"
    section_keys: ClassVar[frozenset[str]] = frozenset(
        {"backend", "time_budget", "steps", "base", "timeout_s", "metric", "direction",
         "memory_limit_mb", "guard_command"}
    )

    def __init__(
        self,
        *,
        backend: str = "auto",
        time_budget: float = 30.0,
        steps: int = 0,
        base: Mapping[str, Any] | None = None,
        timeout_s: float = 600.0,
        memory_limit_mb: int = 16384,
        guard_command: str = "",
        metric: str = "val_bpb",
        direction: Direction = "lower",
        base_dir: Path = Path("."),
        pinned_eval_hash: str | None = None,
        trainer_command: Sequence[str] | None = None,
    ):
        """trainer_command replaces TRAINER_COMMAND; it exists for tests that stand in a fake
        trainer script and is not an [env] key."""
        check_direction(direction)
        if backend not in BACKENDS:
            raise ValueError(f"[env] backend = {backend!r} is not one of {sorted(BACKENDS)}")
        if steps < 0:
            raise ValueError(f"[env] steps = {steps!r} must be >= 0")
        if timeout_s <= 0:
            raise ValueError(f"[env] timeout_s = {timeout_s!r} must be > 0")
        if steps == 0 and not 0 < time_budget < timeout_s:
            raise ValueError(
                f"[env] time_budget = {time_budget!r} with timeout_s = {timeout_s!r}: the training "
                "budget must be > 0 and below the per-run timeout "
                "(warm-up and evaluation come on top)"
            )
        self.backend = backend
        self.time_budget = float(time_budget)
        self.steps = int(steps)
        self.base = dict(base or {})
        self._check_base()
        self.timeout_s = float(timeout_s)
        if memory_limit_mb < 0:
            raise ValueError(f"[env] memory_limit_mb = {memory_limit_mb!r} must be >= 0")
        self.memory_limit_mb = int(memory_limit_mb)
        problem = guard_template_problem(guard_command) if guard_command else None
        if problem:
            raise ValueError(f"[env] guard_command = {guard_command!r} {problem}")
        self.guard_command = guard_command
        # A configuration's guard verdict (None: it passed), by stable_hash(config): the guard
        # runs once per configuration and process.
        self._guard_verdicts: dict[str, str | None] = {}
        self.metric_name = metric
        self.direction = direction
        self.base_dir = Path(base_dir).resolve()
        self.pinned_eval_hash = pinned_eval_hash
        self.trainer_command = list(trainer_command or TRAINER_COMMAND)
        self.code_hash = train_code_hash()
        self._pin_lock = threading.Lock()  # the parallel runner calls run from several threads

    @property
    def eval_hash(self) -> str | None:  # the contract's name for the pinned hash
        return self.pinned_eval_hash

    def __getstate__(self) -> dict:  # picklable for the Ray runner (locks are not)
        state = self.__dict__.copy()
        del state["_pin_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pin_lock = threading.Lock()

    def budget_flags(self) -> list[str]:
        return (["--steps", str(self.steps)] if self.steps > 0
                else ["--time-budget", str(self.time_budget)])

    def run(self, config: dict, seed: int) -> Outcome:
        flags = ["--seed", str(seed), "--backend", self.backend, *self.budget_flags()]
        key = stable_hash(config)
        failed_guard = self._guard_verdicts.get(key)
        if failed_guard:
            return Outcome(None, "refused", 0.0, None, {"reason": failed_guard})
        try:
            if config.get(PATCHES_KEY):
                return self._run_patched(config, seed, flags, key)
            return self._run_plain(config, flags, key)
        except GuardInterrupted as stop:
            return Outcome(None, "crash", 0.0, None, {"reason": str(stop)})

    def _run_plain(self, config: dict, flags: list[str], key: str) -> Outcome:
        with tempfile.TemporaryDirectory(prefix="gpt-env-") as folder:
            config_path = Path(folder) / "config.json"
            config_path.write_text(json.dumps(config))
            if self.guard_command and key not in self._guard_verdicts:
                split = Path(folder) / "training-split.npz"
                if "{split}" in self.guard_command:  # the data were checked before any run
                    settings = build_config(config)
                    write_training_split(split, prepare(settings.data, settings.text_column,
                                                        settings.eval_tokens))
                argv = guard_argv(self.guard_command, trainer=PROJECT, config=config_path,
                                  split=split)
                self._guard_verdicts[key] = run_guard(
                    argv, cwd=Path(folder), environment=self._child_environment(),
                    timeout_s=self.timeout_s, owner=self.owner)
                if self._guard_verdicts[key]:
                    return Outcome(None, "refused", 0.0, None,
                                   {"reason": self._guard_verdicts[key]})
            argv = [*self.trainer_command, "--config", str(config_path), *flags]
            result = run_process(argv, cwd=self.base_dir, timeout_s=self.timeout_s,
                                 env=self._child_environment(), owner=self.owner)
        summary = parse_summary(result.stdout) or {}
        extra: dict[str, Any] = {**summary, "argv": argv, "returncode": result.returncode}
        return self._failure(result, extra) or self._judged(summary, extra, result)

    def _run_patched(self, config: dict, seed: int, flags: list[str], key: str) -> Outcome:
        """A run whose configuration applies code patches (envs.patched)."""
        problem = patch_problem(config[PATCHES_KEY])
        if problem is not None:
            return Outcome(None, "refused", 0.0, None,
                           {"reason": f"the patches do not apply together: {problem}"})
        guard = self.guard_command if key not in self._guard_verdicts else ""
        made = run_patched(config, seed, flags=flags, timeout_s=self.timeout_s,
                           memory_limit_mb=self.memory_limit_mb, owner=self.owner,
                           child_environment=self._child_environment(), guard_command=guard)
        if guard:
            self._guard_verdicts[key] = made.refused if made.guard_failed else None
        trained = made.trained
        summary = parse_summary(trained.stdout) or {}
        extra: dict[str, Any] = {**summary, **made.extra, "returncode": trained.returncode}
        if made.refused:
            return _failed(trained, extra, "refused", made.refused)
        failure = self._failure(trained, extra)
        if failure and "PermissionError" in trained.stderr:
            failure.extra["reason"] += (": the confinement denied it a file (a patch may read "
                                        "and write only its own folder)")
        if failure or made.judged is None:
            return failure or _failed(trained, extra, "crash",
                                      "the patched trainer saved no weights")
        judged = made.judged
        verdict = parse_summary(judged.stdout) or {}
        extra = {**extra, **verdict, "judge_returncode": judged.returncode}
        failure = self._failure(judged, extra, "the judge (train.judge)")
        if failure:
            return failure
        seconds = trained.seconds + judged.seconds
        return self._judged({**summary, **verdict}, extra, dataclasses.replace(trained,
                                                                                seconds=seconds))

    def _failure(self, result: ProcessResult, extra: dict[str, Any],
                 who: str = "the trainer") -> Outcome | None:
        """The outcome of a process that was killed, timed out, refused, failed or crashed;
        None if it exited 0."""
        if result.killed:
            return _failed(result, extra, "crash", "killed: the study was interrupted")
        if result.timed_out:
            return _failed(result, extra, "timeout", f"killed after timeout_s = {self.timeout_s} s")
        refused_line = _line_starting("REFUSED", result.stdout, result.stderr)
        if refused_line is not None:
            return _failed(result, extra, "refused", refused_line)
        fail_line = _line_starting("FAIL", result.stdout, result.stderr)
        if fail_line is not None:
            return _failed(result, extra, "nan", fail_line)
        if result.returncode != 0:
            return _failed(result, extra, "crash", f"{who} exited with status {result.returncode}")
        return None

    def _judged(self, summary: dict[str, Any], extra: dict[str, Any],
                result: ProcessResult) -> Outcome:
        """The outcome of a run whose processes exited 0, read from its summary: refused where
        its evaluation hash differs from the study's."""
        if not summary:
            return _failed(result, extra, "crash",
                           "the trainer printed no summary block ('---' then 'key: value' lines)")
        value = summary.get(self.metric_name)
        if not isinstance(value, float):
            return _failed(result, extra, "crash",
                           f"the summary has no numeric {self.metric_name!r} (got {value!r})")
        if not math.isfinite(value) or abs(value) > METRIC_LIMIT:
            return _failed(result, extra, "nan", f"{self.metric_name} = {value}")
        eval_hash = summary.get("eval_hash")
        if not eval_hash:
            return _failed(result, extra, "crash",
                           "the summary has no eval_hash, so the evaluation cannot be checked")
        with self._pin_lock:
            if self.pinned_eval_hash is None:
                self.pinned_eval_hash = eval_hash
            pinned = self.pinned_eval_hash
        if eval_hash != pinned:
            return _failed(result, extra, "refused",
                           f"eval_hash {eval_hash} differs from the study's {pinned}: "
                           "the evaluation code changed")
        return Outcome(value, "ok", result.seconds, _steps(summary), extra)

    def _check_base(self) -> None:
        """[env] base: trainer knobs only, none that [env] sets itself, values the trainer
        takes."""
        for key in self.base:
            problem = knob_problem(key)
            if problem is None and key in ENV_OWNED_KNOBS:
                problem = f"{key!r} is set by {ENV_OWNED_KNOBS[key]}"
            if problem is not None:
                raise ValueError(f"[env] base: {problem}")
        try:
            build_config(self.base)
        except ConfigError as exc:
            raise ValueError(f"[env] base: {exc}") from None

    def change_problem(self, change: Mapping[str, Any]) -> str | None:
        """A key that is no trainer knob or is pinned (PINNED_KNOBS), or a value the trainer
        refuses on top of [env] base."""
        for key in change:
            problem = knob_problem(key)
            if problem is None and key in PINNED_KNOBS:
                problem = (f"{key!r} is pinned: it sets {PINNED_KNOBS[key]}, which every run of "
                           "the study shares (set it in [env] or [env] base)")
            if problem is not None:
                return problem
        try:
            build_config({**self.base, **change})
        except ConfigError as exc:
            return f"on top of [env] base, {exc}"
        return None

    def patch_problem(self, diffs: Sequence[str]) -> str | None:
        """Why the diffs, in order, do not patch the trainer's mutable files (envs.patched), or
        why this trainer takes no patches."""
        if self.backend == "mlx":
            return "a patch edits the PyTorch model; [env] backend = 'mlx' runs another"
        if self.trainer_command != list(TRAINER_COMMAND):
            return "a stand-in trainer takes no patches"
        return patch_problem(diffs)

    def mutable_sources(self, diffs: Sequence[str]) -> dict[str, str] | None:
        if self.patch_problem(diffs) is not None:
            return None
        return apply_diffs(pristine_sources(), diffs)

    def mutable_knobs(self) -> tuple[str, ...]:
        return MUTABLE_KNOBS

    def preflight_problem(self) -> str | None:
        """The trainer's verdict on the study's data (`python -m train.prepare`, which builds
        the cache the runs then share): a missing file, or validation text it trains on."""
        if self.trainer_command != list(TRAINER_COMMAND):
            return None  # a stand-in trainer has no prepare step
        with tempfile.TemporaryDirectory(prefix="gpt-env-") as folder:
            config_path = Path(folder) / "config.json"
            config_path.write_text(json.dumps(self.base))
            result = run_process([*TRAINER_COMMAND[:-1], "train.prepare", "--config",
                                  str(config_path)], cwd=self.base_dir,
                                 timeout_s=self.timeout_s, env=self._child_environment(),
                                 owner=self.owner)
        if result.returncode == 0:
            return None
        lines = (result.stdout + result.stderr).strip().splitlines()
        return f"[env] base: the trainer refuses its data: {lines[-1] if lines else 'no output'}"

    def _child_environment(self) -> dict[str, str]:
        """This environment with the project root on PYTHONPATH, so `-m train` resolves from any
        cwd."""
        environment = dict(os.environ)
        paths = [str(TRAIN_PACKAGE.parent), *filter(None, [environment.get("PYTHONPATH")])]
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        return environment

    def fingerprint(self) -> str:
        """Identifies the task (base knobs, backend, budget, metric), not the eval_hash or code."""
        budget = {"steps": self.steps} if self.steps > 0 else {"time_budget": self.time_budget}
        return stable_hash({"kind": self.kind, "base": self.base, "backend": self.backend, **budget,
                            "metric": self.metric_name, "direction": self.direction})
