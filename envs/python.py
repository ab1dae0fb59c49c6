"""The `python` env: a Python callable `objective(config, seed) -> metric`, called in-process.

The callable is given to the Python API (`engine.create_study(objective, ...)`), or named in
the config as `function = "package.module:name"` or `function = "path/to/file.py:name"` (a
path relative to the config's folder), so the command line can run it too. Given neither, the
env makes no runs itself: its runs are made elsewhere and told to the study (ask/tell).

A run is the call. A finite number it returns is the metric; NaN, an infinity or a value past
the metric limit is a "nan" run; an exception is a "crash" run with the traceback's tail, and
anything else it returns is a "crash" too. The call runs in this process, so `timeout_s` does
not apply: an objective that may hang should time itself out, or run as a `command` env.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from envs.base import Direction, Env, Outcome, check_direction, register_env, stable_hash
from train.vocabulary import METRIC_LIMIT

Objective = Callable[[dict, int], float]
TRACEBACK_CHARS = 2000  # as much of a crash's traceback as the ledger keeps


def load_function(target: str, base_dir: Path) -> Objective:
    """The callable that `target` names: "package.module:name" (imported) or "file.py:name"
    (loaded from that file, relative to base_dir). ValueError, saying why, when it cannot."""
    where, _, name = target.rpartition(":")
    if not where or not name.isidentifier():
        raise ValueError(f"[env] function = {target!r}: expected 'package.module:name' or "
                         "'path/to/file.py:name'")
    path = (Path(base_dir) / where).resolve() if where.endswith(".py") else None
    if path is not None and not path.is_file():
        raise ValueError(f"[env] function = {target!r}: no file {path}")
    try:
        if path is not None:
            spec = importlib.util.spec_from_file_location(f"_engine_objective_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except Exception as exc:  # the user's module failed to import: say how, in one line
        raise ValueError(f"[env] function = {target!r}: importing {where} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"[env] function = {target!r}: {where} has no callable {name!r}")
    return function


def source_hash(function: Callable) -> str:
    """Hex digest of the callable's qualified name and, where Python can find it, its source:
    a run's code hash, so an edited objective reads as different code."""
    name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # a builtin, a callable object, code typed at a prompt
        source = ""
    return hashlib.sha256(f"{name}\0{source}".encode()).hexdigest()[:16]


def metric_of(value: Any) -> tuple[float | None, str, str]:
    """(value, "ok", "") for a finite real number within +-METRIC_LIMIT; else (None, status,
    reason): "nan" for NaN, an infinity or a value past the limit, "crash" for anything that is
    not a real number (a bool included: True is no metric)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None, "crash", f"the objective returned {type(value).__name__} {value!r:.60}, " \
                              "not a number"
    value = float(value)
    if not math.isfinite(value) or abs(value) > METRIC_LIMIT:
        return None, "nan", f"the objective returned {value!r}: not finite within " \
                            f"+-{METRIC_LIMIT:g}"
    return value, "ok", ""


@register_env
class PythonEnv(Env):
    """Calls `objective(config, seed)` for each run, in this process."""

    kind: ClassVar[str] = "python"
    section_keys: ClassVar[frozenset[str]] = frozenset({"function", "base", "metric",
                                                        "direction"})

    def __init__(self, metric: str = "value", *, function: str = "",
                 base: Mapping[str, Any] | None = None, direction: Direction = "lower",
                 objective: Objective | None = None,
                 base_dir: Path = Path(".")):
        check_direction(direction)
        if objective is not None and function:
            raise ValueError(f"[env] function = {function!r} and an objective were both given; "
                             "give one")
        if objective is None and function:
            objective = load_function(function, base_dir)
        if objective is not None and not callable(objective):
            raise ValueError(f"the objective must be callable as objective(config, seed), got "
                             f"{type(objective).__name__}")
        self.objective = objective
        self.makes_runs = objective is not None
        self.base = dict(base or {})
        self.metric_name = metric
        self.direction = direction
        self.backend = "python"
        self.code_hash = source_hash(objective) if objective is not None else "told"
        self.function = function

    def change_problem(self, change: Mapping[str, Any]) -> str | None:
        """A key the base does not set: the base declares the objective's knobs, so a typo in a
        hypothesis cannot pass unnoticed (an empty base declares none and allows any)."""
        if "seed" in change:
            return "'seed' is the run's seed, passed to the objective on its own"
        unknown = sorted(set(change) - set(self.base)) if self.base else []
        if unknown:
            return (f"{', '.join(map(repr, unknown))} is not a knob of [env] base "
                    f"({', '.join(sorted(self.base))}); add it to base with its default value")
        return None

    def mutable_knobs(self) -> tuple[str, ...] | None:
        return tuple(sorted(self.base)) or None

    def run(self, config: dict, seed: int) -> Outcome:
        if self.objective is None:
            raise RuntimeError("this python env has no objective: its runs are told (ask/tell)")
        started = time.perf_counter()
        try:
            returned = self.objective(dict(config), seed)
        except Exception as exc:
            seconds = time.perf_counter() - started
            return Outcome(None, "crash", seconds, None, {
                "reason": f"the objective raised {type(exc).__name__}: {exc}"[:300],
                "stderr_tail": traceback.format_exc()[-TRACEBACK_CHARS:]})
        seconds = time.perf_counter() - started
        value, status, reason = metric_of(returned)
        if value is None:
            return Outcome(None, status, seconds, None, {"reason": reason})
        return Outcome(value, "ok", seconds)

    def fingerprint(self) -> str:
        """The objective (its name and source, or that runs are told) and the base config."""
        return stable_hash({"kind": self.kind, "code": self.code_hash, "base": self.base,
                            "metric": self.metric_name, "direction": self.direction})
