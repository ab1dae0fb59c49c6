"""The `command` env: any program that prints a `NAME: value` line.

The [env] command is a template such as `python bench.py --lr {lr} --seed {seed}`. It is split
into arguments the way a POSIX shell would (shlex) FIRST, and only then is each argument
formatted on its own with the run's config values and seed. The argument list is executed
without a shell, so a value such as `x; rm -rf /` arrives as one literal argument: it can neither
add arguments nor run shell syntax. Literal braces are written `{{` and `}}`.

A value that would begin an argument with `-` is refused (the program would read it as an
option, `--out=report.txt` say) unless the template marks the placeholder as an option's value,
`{x:opt}`; `--x={x}` is always safe. A template that runs a shell (`sh -c '... {x}'`) hands the
values to the shell's parser again: that is allowed, with a warning, and nothing above holds.
"""
from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from envs.base import (
    Direction,
    Env,
    Outcome,
    check_direction,
    read_metric,
    register_env,
    stable_hash,
)
from envs.process import run_process, tail

_FORMATTER = string.Formatter()
# `{x:opt}` marks a placeholder as an option's value, which may begin with "-".
OPTION_SPEC = "opt"
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox"})


class OptionValueError(ValueError):
    """A value would begin an argument with "-" where the template does not allow an option."""


def parse_template(template: str, *, key: str) -> tuple[list[str], set[str]]:
    """shlex-split a command template into per-argument templates and the placeholder names."""
    try:
        argument_templates = shlex.split(template)
    except ValueError as exc:  # unbalanced quotes
        raise ValueError(
            f"[env] {key} = {template!r} cannot be split into arguments: {exc}") from exc
    if not argument_templates:
        raise ValueError(f"[env] {key} = {template!r} is empty; give the program to run")
    names = set().union(*(placeholders_of(argument, key=key) for argument in argument_templates))
    return argument_templates, names


def placeholders_of(argument_template: str, *, key: str) -> set[str]:
    """Names of the {placeholders} in one argument template; only plain names are allowed."""
    try:
        fields = list(_FORMATTER.parse(argument_template))
    except ValueError as exc:  # a lone "{" or "}"
        raise ValueError(
            f"[env] {key}: argument {argument_template!r} has a bad placeholder ({exc}); "
            "write {{ and }} for literal braces"
        ) from exc
    names = set()
    for _literal, field_name, format_spec, _conversion in fields:
        if field_name is None:
            continue
        # Attribute/index access ({a.b}, {a[0]}) and nested fields would let a value reach
        # beyond a plain substitution, so only identifiers are placeholders.
        if not field_name.isidentifier() or "{" in (format_spec or ""):
            raise ValueError(
                f"[env] {key}: placeholder {{{field_name}}} in argument {argument_template!r} "
                "must be a plain name such as {lr} or {seed}; write {{ and }} for literal braces"
            )
        names.add(field_name)
    return names


def render_arguments(
    argument_templates: list[str], values: Mapping[str, Any], *, key: str
) -> list[str]:
    """Format each argument template separately: one template argument stays one argument."""
    needed = set().union(*(placeholders_of(a, key=key) for a in argument_templates))
    missing = sorted(needed - set(values))
    if missing:
        raise ValueError(
            f"[env] {key}: no value for placeholder(s) {missing}; the config has {sorted(values)}"
        )
    return [render_argument(argument, values, key=key) for argument in argument_templates]


def render_argument(argument_template: str, values: Mapping[str, Any], *, key: str) -> str:
    """One argument with its placeholders filled; OptionValueError when a value would make it
    begin with "-" and its placeholder is not marked {name:opt}."""
    parts: list[str] = []
    for literal, name, spec, conversion in _FORMATTER.parse(argument_template):
        parts.append(literal)
        if name is None:
            continue
        value = _FORMATTER.convert_field(values[name], conversion)
        text = format(value, "" if spec == OPTION_SPEC else spec or "")
        if text.startswith("-") and spec != OPTION_SPEC and not "".join(parts):
            raise OptionValueError(
                f"the value {text[:60]!r} of {{{name}}} would begin an argument with '-', so the "
                f"program would read it as an option; if it is an option's value, write "
                f"{{{name}:{OPTION_SPEC}}} in [env] {key}"
            )
        parts.append(text)
    return "".join(parts)


def runs_a_shell(argument_templates: list[str]) -> bool:
    """Whether the command is a shell given a script to run (`sh -c`, `env bash -ec ...`)."""
    for index, argument in enumerate(argument_templates[:-1]):
        if Path(argument).name in SHELLS:
            # any short option holding c among the shell's options (`bash -e -c`, `-ec`)
            if any(option.startswith("-") and not option.startswith("--") and "c" in option
                   for option in argument_templates[index + 1:]):
                return True
    return False


def last_metric_text(stdout: str, metric_name: str) -> str | None:
    """The value text of the last `NAME: value` line on stdout (the last one wins), or None."""
    pattern = re.compile(rf"^\s*{re.escape(metric_name)}\s*:(.*)$")
    found = None
    for line in stdout.splitlines():
        match = pattern.match(line)
        if match:
            found = match.group(1).strip()
    return found


@register_env
class CommandEnv(Env):
    """Runs a user's command per run and reads the metric from its stdout."""

    kind: ClassVar[str] = "command"
    section_keys: ClassVar[frozenset[str]] = frozenset(
        {"command", "truth_command", "base", "cwd", "timeout_s", "metric", "direction"}
    )

    def __init__(
        self,
        command: str,
        metric: str,
        *,
        truth_command: str = "",
        base: Mapping[str, Any] | None = None,
        cwd: str = "",
        timeout_s: float = 600.0,
        direction: Direction = "lower",
        base_dir: Path = Path("."),
    ):
        if not metric or not metric.strip():
            raise ValueError(f"[env] metric = {metric!r}: the command env needs the metric's name")
        check_direction(direction)
        if timeout_s <= 0:
            raise ValueError(f"[env] timeout_s = {timeout_s!r} must be > 0")
        self.base = dict(base or {})
        if "seed" in self.base:
            raise ValueError("[env] base must not set 'seed': {seed} is the run's seed")
        self.command = command
        self.argument_templates, needed = parse_template(command, key="command")
        # The base config runs first, so every placeholder must have a value there.
        missing = sorted(needed - set(self.base) - {"seed"})
        if missing:
            raise ValueError(
                f"[env] command uses placeholder(s) {missing} that [env] base does not set; "
                f"base has {sorted(self.base)}"
            )
        self.truth_command = truth_command
        self.truth_templates: list[str] | None = None
        if truth_command:
            self.truth_templates, truth_needed = parse_template(truth_command, key="truth_command")
            if "seed" in truth_needed:
                raise ValueError("[env] truth_command must not use {seed}: "
                                 "the noise-free value has no seed")
        self.cwd = (Path(base_dir) / cwd).resolve() if cwd else Path(base_dir).resolve()
        if not self.cwd.is_dir():
            raise ValueError(f"[env] cwd = {cwd!r} is not a directory (resolved to {self.cwd})")
        self.timeout_s = float(timeout_s)
        self.metric_name = metric
        self.direction = direction
        self.backend = "command"
        self.code_hash = stable_hash({"command": command, "truth_command": truth_command})
        self.eval_hash = None
        self.placeholders = frozenset(needed - {"seed"})
        try:
            self.render(self.base, seed=0)
        except OptionValueError as exc:
            raise ValueError(f"[env] base: {exc}") from None

    def render(self, config: Mapping[str, Any], seed: int) -> list[str]:
        """The run's argument list."""
        if "seed" in config:
            raise ValueError("a command env config must not set 'seed': {seed} is the run's seed")
        return render_arguments(self.argument_templates, {**config, "seed": seed}, key="command")

    def change_problem(self, change: Mapping[str, Any]) -> str | None:
        """A key that is no placeholder of the command (the run would ignore it), or a value
        that would begin an argument with "-"."""
        ignored = sorted(set(change) - self.placeholders)
        if ignored:
            return (f"{', '.join(map(repr, ignored))} is no placeholder of [env] command "
                    f"(placeholders: {', '.join(sorted(self.placeholders)) or 'none'}), so the "
                    "run would not use it")
        try:
            self.render({**self.base, **change}, seed=0)
        except OptionValueError as exc:
            return str(exc)
        return None

    def mutable_knobs(self) -> tuple[str, ...]:
        return tuple(sorted(self.placeholders))

    def warnings(self) -> list[str]:
        if not runs_a_shell(self.argument_templates):
            return []
        return [f"[env] command runs a shell ({' '.join(self.argument_templates[:2])}): the "
                "shell parses the values again, so a value can inject shell syntax; pass "
                "values to the program directly to keep them literal"]

    def run(self, config: dict, seed: int) -> Outcome:
        try:
            argv = self.render(config, seed)
        except OptionValueError as exc:  # checked up front; a value is never passed unchecked
            return Outcome(None, "refused", 0.0, None, {"reason": str(exc)})
        result = run_process(argv, cwd=self.cwd, timeout_s=self.timeout_s, owner=self.owner)
        extra: dict[str, Any] = {"argv": argv, "returncode": result.returncode}

        def failed(status: str, reason: str) -> Outcome:
            return Outcome(None, status, result.seconds, None,
                           {**extra, "reason": reason, "stderr_tail": tail(result.stderr)})

        if result.killed:
            return failed("crash", "killed: the study was interrupted")
        if result.timed_out:
            return failed("timeout", f"killed after timeout_s = {self.timeout_s} s")
        if result.returncode != 0:
            return failed("crash", f"exited with status {result.returncode}")
        text = last_metric_text(result.stdout, self.metric_name)
        if text is None:
            return failed("crash", f"no '{self.metric_name}: <value>' line on stdout")
        value, status, reason = read_metric(text)
        if value is None:
            return failed(status, f"the last '{self.metric_name}:' line: {reason}")
        return Outcome(value, "ok", result.seconds, None, extra)

    def knows_truth(self) -> bool:
        return self.truth_templates is not None

    def truth(self, config: dict) -> float | None:
        """The value printed by truth_command for config, or None when there is none."""
        if self.truth_templates is None:
            return None
        argv = render_arguments(self.truth_templates, config, key="truth_command")
        result = run_process(argv, cwd=self.cwd, timeout_s=self.timeout_s, owner=self.owner)
        text = last_metric_text(result.stdout, self.metric_name)
        if result.timed_out or result.returncode != 0 or text is None:
            raise RuntimeError(
                f"truth_command {argv} gave no '{self.metric_name}: <value>' line "
                f"(exit status {result.returncode}, timed out: {result.timed_out}); "
                f"stderr tail: {tail(result.stderr, 500)!r}"
            )
        value, _, reason = read_metric(text)
        if value is None:
            raise RuntimeError(f"truth_command {argv} printed {self.metric_name}: {reason}")
        return value

    def fingerprint(self) -> str:
        return stable_hash({"kind": self.kind, "command": self.command, "base": self.base,
                            "metric": self.metric_name, "direction": self.direction})
