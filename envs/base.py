"""The Env interface, the Outcome of one run, the registry of env kinds and make_env.

An env is what the engine optimises: it turns (config dict, seed) into an Outcome and never
raises for a failed run (crash, NaN, timeout, refused all become statuses). It raises only for
mistakes in how it is called (a config key it cannot understand), which are bugs, not results.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from train.vocabulary import DIRECTIONS, METRIC_LIMIT, RUN_STATUSES, Direction
from train.vocabulary import RunStatus as Status

STATUSES: frozenset[str] = frozenset(RUN_STATUSES)


@dataclass(frozen=True)
class Outcome:
    """One run's result. metric is a finite float exactly when status is "ok"."""

    metric: float | None
    status: Status
    seconds: float
    steps: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Outcome status {self.status!r} is not one of {sorted(STATUSES)}")
        if self.status == "ok" and (self.metric is None or not math.isfinite(self.metric)):
            raise ValueError(f"an 'ok' Outcome needs a finite metric, got {self.metric!r}")
        if self.status != "ok" and self.metric is not None:
            raise ValueError(f"a {self.status!r} Outcome carries no metric, got {self.metric!r}")


# A metric is written as a plain decimal number: Python's float() would also take "1_0.5" as 10.5.
METRIC_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def read_metric(text: str) -> tuple[float | None, str, str]:
    """(value, "ok", "") for a finite decimal number within +-METRIC_LIMIT; else (None, status,
    reason): "nan" for NaN, an infinity or a value past the limit (an exploding run: beliefs
    refuse it, and one such run would stall every later step), "crash" for anything else."""
    text = text.strip()
    if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return None, "nan", f"the metric is {text!r}"
    if not METRIC_NUMBER.fullmatch(text):
        return None, "crash", f"the metric {text[:60]!r} is not a decimal number"
    value = float(text)
    if not math.isfinite(value) or abs(value) > METRIC_LIMIT:
        return None, "nan", f"the metric {text!r} is beyond +-{METRIC_LIMIT:g}: an exploding run"
    return value, "ok", ""


def stable_hash(payload: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable payload, independent of dict key order."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def hash_files(paths: list[Path], root: Path, length: int = 16) -> str:
    """Hex digest of the files' paths (relative to root) and bytes, independent of list order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:length]


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"[env] direction = {direction!r} is not one of {sorted(DIRECTIONS)}")


class Env:
    """Base class of every env kind; subclasses set the class variables and implement run."""

    kind: ClassVar[str]
    # The [env] keys this kind understands (besides "kind"); make_env passes exactly these.
    section_keys: ClassVar[frozenset[str]]

    metric_name: str
    direction: Direction
    backend: str
    code_hash: str
    eval_hash: str | None = None
    # Tags the env's child processes (envs.process), so that those a killed study left behind
    # can be found and killed when it resumes; the study sets it to its folder's.
    owner: str = ""
    # False for an env whose runs are made elsewhere and told to the study (a python env with
    # no objective, driven by ask/tell): the loop must not ask it to run.
    makes_runs: bool = True

    def run(self, config: dict, seed: int) -> Outcome:
        raise NotImplementedError

    def truth(self, config: dict) -> float | None:
        """The noise-free mean of the metric for config, where the env knows it."""
        return None

    def knows_truth(self) -> bool:
        """Whether `truth` gives a value (without computing one)."""
        return False

    def fingerprint(self) -> str:
        raise NotImplementedError

    def hypotheses(self) -> list[dict] | None:
        """Hypotheses the env defines itself ({name, category, change, description}), if any."""
        return None

    def change_problem(self, change: Mapping[str, Any]) -> str | None:
        """Why a hypothesis may not make this change (a key the env does not let a hypothesis
        set, a value it refuses), or None. The engine asks before any run, for the config's
        hypotheses and for every proposal alike."""
        return None

    def patch_problem(self, diffs: Sequence[str]) -> str | None:
        """Why a configuration may not apply these code patches (unified diffs, in order), or
        None. Only the gpt env takes patches."""
        return f"[env] kind = {self.kind!r} takes no code patches (kind = 'gpt' does)"

    def mutable_sources(self, diffs: Sequence[str]) -> dict[str, str] | None:
        """The files a code patch may edit, with `diffs` applied (a proposer is shown the
        incumbent's); None for an env that takes no patches."""
        return None

    def patch_base(self) -> str:
        """The hash of the code this env's patches apply to ("" for an env that takes none): a
        replay of which patches compose needs the same code, so a resume compares it."""
        sources = self.mutable_sources([])
        return "" if sources is None else stable_hash(sources)

    def preflight_problem(self) -> str | None:
        """Why no run of this env's set-up can succeed, found before the study starts (the
        gpt env's training data repeating its validation text), or None."""
        return None

    def mutable_knobs(self) -> tuple[str, ...] | None:
        """The config keys a hypothesis may change, where the env knows them."""
        return None

    def warnings(self) -> list[str]:
        """What the person should know about this env's set-up before it runs."""
        return []


ENVS: dict[str, type[Env]] = {}


def register_env(env_class: type[Env]) -> type[Env]:
    """Class decorator: make an env kind available to make_env under env_class.kind."""
    if env_class.kind in ENVS:
        raise ValueError(f"env kind {env_class.kind!r} is registered twice")
    ENVS[env_class.kind] = env_class
    return env_class


def make_env(section: Mapping[str, Any], *, base_dir: Path, objective: Any = None) -> Env:
    """Build the env described by a validated [env] table.

    Relative paths in the table resolve against base_dir (the config file's folder). Keys that
    belong to another env kind are ignored (engine/config.py rejects them for the user); keys no
    kind knows are an error. `objective`, a Python callable, goes to a kind that takes one (the
    python env) and is refused by the others.
    """
    kind = section.get("kind")
    if kind not in ENVS:
        raise ValueError(f"[env] kind = {kind!r} is not one of {sorted(ENVS)}")
    known = set().union(*(env_class.section_keys for env_class in ENVS.values()))
    unknown = sorted(set(section) - known - {"kind"})
    if unknown:
        raise ValueError(f"[env] has unknown keys {unknown}; known keys are {sorted(known)}")
    env_class = ENVS[kind]
    kwargs = {key: value for key, value in section.items() if key in env_class.section_keys}
    parameters = inspect.signature(env_class).parameters
    if "base_dir" in parameters:
        kwargs["base_dir"] = Path(base_dir)
    if objective is not None:
        if "objective" not in parameters:
            raise ValueError(f"[env] kind = {kind!r} runs no Python objective; use kind = "
                             "'python' to optimise a callable")
        kwargs["objective"] = objective
    return env_class(**kwargs)
