"""The one generic validator, and the few rules that relate several keys.

Each function appends one line per problem to `problems` (naming `[section] key`, the value and
what is allowed, with "did you mean ...?" for near misses) and carries on, so that every
problem of a config is reported at once (engine.config raises them together).
"""

from __future__ import annotations

import copy
import difflib
import reprlib
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.schema import FLOAT, INT, REQUIRED, ByKind, Derived, Field
from engine.sections import ARRAY_SECTIONS
from envs.guard import guard_template_problem

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 5, 5


def heading(section: str) -> str:
    return f"[[{section}]]" if section in ARRAY_SECTIONS else f"[{section}]"


def got(value: Any) -> str:
    return _short.repr(value)


def suggest(key: Any, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1) if isinstance(key, str) else []
    return f" Did you mean {close[0]!r}?" if close else ""


def _unknown_key(
    where: str, key: Any, value: Any, fields: dict[str, Field], env_kind: str | None
) -> str:
    loc = f"{where} {key}"
    field = fields.get(key)
    if field is not None and field.kinds is not None:
        owners = " or ".join(repr(k) for k in field.kinds)
        return (f"{loc}: got {got(value)}, but this key applies only to kind {owners}, "
                f"and this [env] has kind = {env_kind!r}")
    valid = [k for k, f in fields.items() if f.kinds is None or env_kind in f.kinds]
    return (f"{loc}: unknown key (value {got(value)}).{suggest(key, valid)} "
            f"Allowed keys: {', '.join(valid)}")


def validate_table(
    where: str,
    table: dict,
    fields: dict[str, Field],
    problems: list[str],
    *,
    env_kind: str | None = None,
) -> dict[str, Any]:
    """Check one table against its fields; return the valid values with plain defaults filled.

    Invalid keys are left out of the result (their problem is recorded), so later checks
    can skip what is already reported. `env_kind` is the [env] kind when known; for [env]
    with an unknown kind, kind-specific keys are type-checked but not required or defaulted.
    """
    def applies(field: Field) -> bool:
        return field.kinds is None or env_kind is None or env_kind in field.kinds

    values: dict[str, Any] = {}
    for key, value in table.items():
        field = fields.get(key)
        if field is None or not applies(field):
            problems.append(_unknown_key(where, key, value, fields, env_kind))
        elif field.accepts(value):
            values[key] = field.convert(value)
        else:
            not_a_number = isinstance(value, bool) and field.type in (INT, FLOAT)
            hint = " (true/false is not a number)" if not_a_number else ""
            problems.append(f"{where} {key}: got {got(value)}, expected {field.allowed()}{hint}")
    for key, field in fields.items():
        if key in table or not applies(field) or isinstance(field.default, Derived):
            continue
        default = field.default
        if isinstance(default, ByKind) or field.kinds is not None:
            if env_kind is None:
                continue  # which keys an unknown kind needs cannot be known; kind is reported
            if isinstance(default, ByKind):
                default = default.defaults.get(env_kind, REQUIRED)
        if default is REQUIRED:
            needed_by = f" (required for kind = {env_kind!r})" if env_kind else ""
            problems.append(f"{where} {key}: missing{needed_by}; expected {field.allowed()}")
        else:
            values[key] = copy.deepcopy(default)
    return {key: values[key] for key in fields if key in values}  # schema order


def validate_hypotheses(
    entries: Any, fields: dict[str, Field], problems: list[str]
) -> list[dict[str, Any]]:
    if not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
        problems.append(f"[[hypotheses]]: got {got(entries)}, "
                        "expected an array of tables (one [[hypotheses]] block per hypothesis)")
        return []
    hypotheses, first_index = [], {}
    for index, entry in enumerate(entries, start=1):
        label = entry.get("name") if isinstance(entry.get("name"), str) else None
        where = f"[[hypotheses]] #{index}" + (f" ({label})" if label else "")
        values = validate_table(where, entry, fields, problems)
        if not entry.get("change") and not entry.get("patch") and "change" in values:
            problems.append(f"{where} change: " + ("got {}, " if "change" in entry else
                                                   "missing; ")
                            + "expected a non-empty table of knobs, or a patch")
        name = values.get("name")
        if name in first_index:
            problems.append(f"{where} name: got {name!r}, "
                            f"expected a unique name (hypothesis #{first_index[name]} has it)")
        elif name is not None:
            first_index[name] = index
        hypotheses.append(values)
    return hypotheses


def _template_problem(template: str, known: set[str]) -> str | None:
    """Why a command template cannot be filled from `known` placeholder names, if it cannot."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"is not a valid template ({exc}); write literal braces as {{{{ and }}}}"
    unknown = sorted(n for n in names if n not in known)
    if unknown:
        listed = ", ".join("{" + n + "}" for n in unknown)
        return f"uses placeholder(s) {listed}; expected {{seed}} or keys of [env] base"
    return None


def cross_field_problems(tables: dict[str, dict], hypotheses_given: bool) -> list[str]:
    """Rules that relate several keys. Each runs only when its keys passed their own checks."""
    problems = []
    decision, env, proposer = (
        tables.get("decision", {}), tables.get("env", {}), tables.get("proposer", {}))
    lo, hi = decision.get("min_replicates"), decision.get("max_replicates")
    if lo is not None and hi is not None and lo > hi:
        problems.append(f"[decision] min_replicates: got {lo!r}, "
                        f"expected an integer <= max_replicates ({hi})")
    if proposer.get("kind") == "llm" and proposer.get("model") == "":
        problems.append("[proposer] model: got '', "
                        "expected a litellm model string (required when kind = 'llm')")
    runner = tables.get("runner", {})
    if runner.get("devices") and runner.get("kind", "local") != "parallel":
        problems.append(f"[runner] devices: got {runner['devices']!r}, "
                        "expected [] unless kind = 'parallel'")
    kind = env.get("kind")
    if kind == "gpt" and env.get("steps") == 0 and env.get("time_budget") == 0:
        problems.append("[env] time_budget: got 0.0, "
                        "expected a number > 0 when steps = 0 "
                        "(or set steps > 0 for fixed-step mode)")
    if kind == "gpt" and env.get("guard_command"):
        reason = guard_template_problem(env["guard_command"])
        if reason:
            problems.append(f"[env] guard_command: got {got(env['guard_command'])}, which "
                            f"{reason}")
    if kind == "command" and "base" in env:
        known = {"seed", *env["base"]}
        for key in ("command", "truth_command"):
            reason = _template_problem(env.get(key, ""), known)
            if reason:
                problems.append(f"[env] {key}: got {got(env[key])}, which {reason}")
    if kind in ("gpt", "command", "python") and not hypotheses_given:
        problems.append("[[hypotheses]]: none given; "
                        "expected at least one [[hypotheses]] block "
                        "(only kind = 'synthetic' may omit them)")
    return problems


def change_problems(hypotheses: Sequence[Any],
                    change_problem: Callable[[Mapping[str, Any]], str | None],
                    patch_problem: Callable[[Sequence[str]], str | None]) -> list[str]:
    """What the env refuses in each [[hypotheses]] change and patch (its `change_problem` and
    `patch_problem` checks; a patch is checked alone, on the pristine trainer)."""
    problems = []
    for index, hypothesis in enumerate(hypotheses, start=1):
        where = f"[[hypotheses]] #{index} ({hypothesis.name})"
        problem = change_problem(hypothesis.change)
        if problem is not None:
            problems.append(f"{where} change: {problem}")
        problem = patch_problem([hypothesis.patch]) if hypothesis.patch else None
        if problem is not None:
            problems.append(f"{where} patch: refused before any run: {problem}")
    return problems


MAX_PATCH_BYTES = 1_000_000  # a patch file is source code, not data


def read_patches(hypotheses: list[dict[str, Any]], folder: Path, known: Mapping[str, str],
                 problems: list[str]) -> None:
    """Replace each hypothesis's `patch` path (relative to `folder`, the config file's) by the
    text of its diff: `known[name]` where given, else its file's."""
    for index, values in enumerate(hypotheses, start=1):
        where = f"[[hypotheses]] #{index}" + (f" ({values['name']})" if "name" in values else "")
        if not values.get("patch"):
            continue
        if values.get("name") in known:
            values["patch"] = known[values["name"]]
            continue
        path = folder / values["patch"]
        # a device or FIFO would hang the read
        unreadable = ("no such file" if not path.exists() else
                      "not a plain file" if not path.is_file() else
                      f"over {MAX_PATCH_BYTES} bytes" if path.stat().st_size > MAX_PATCH_BYTES
                      else None)
        try:
            if unreadable is None:
                values["patch"] = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            unreadable = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        if unreadable is not None:
            problems.append(f"{where} patch: cannot read {str(path)!r} ({unreadable})")
            continue
        if not values["patch"].strip():
            problems.append(f"{where} patch: {str(path)!r} is empty")
