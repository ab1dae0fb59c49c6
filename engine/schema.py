"""The vocabulary config settings are declared in: value types, constraints, `Field`, `setting`.

A config section is a frozen dataclass whose fields are declared with `setting(default,
constraint, doc)`: the field's annotation gives its value type, and the default, constraint and
meaning ride along as the field's metadata. `fields_of(cls)` reads them back as one `Field` per
key, so a section's keys, defaults and rules are written once, on the dataclass, and the
validator (engine.validate) and the documentation (docs/CONFIG.md) both work from that.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# ---------------------------------------------------------------------------------------------
# Value types and constraints.


def _is_int(value: Any) -> bool:
    # TOML `true` is not 1: bool is an int subclass in Python, so exclude it explicitly.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if not (_is_int(value) or isinstance(value, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float (only possible from Python dicts)
        return False


def _is_plain_data(value: Any) -> bool:
    """Strings, finite numbers, booleans, and lists/tables of them: what JSON (the ledger) holds.

    Rejects TOML dates and times, and non-finite numbers, inside free-form tables.
    """
    if isinstance(value, (str, bool)) or _is_finite_number(value):
        return True
    if isinstance(value, list):
        return all(_is_plain_data(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_data(v) for k, v in value.items())
    return False


@dataclass(frozen=True)
class ValueType:
    noun: str  # "integer", "number", ...: used in messages and docs
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = copy.deepcopy  # copies, so the result never aliases `raw`


INT = ValueType("integer", _is_int)
FLOAT = ValueType("number", _is_finite_number, float)  # ints are accepted and become floats
BOOL = ValueType("boolean (true or false)", lambda v: isinstance(v, bool))
STR = ValueType("string", lambda v: isinstance(v, str))
TABLE = ValueType("table", lambda v: isinstance(v, dict) and _is_plain_data(v))
STR_LIST = ValueType(
    "list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)
)


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __call__(self, value: float) -> bool:
        above = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        below = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return above and below

    def describe(self, noun: str) -> str:
        if self.hi is None:
            return f"{_article(noun)} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.lo is None:
            return f"{_article(noun)} {'<' if self.hi_open else '<='} {_num(self.hi)}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"{_article(noun)} in {left}{_num(self.lo)}, {_num(self.hi)}{right}"


@dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()  # (synonym, the choice it stands for)

    def __call__(self, value: str) -> bool:
        return value in self.choices or value in dict(self.aliases)

    def canonical(self, value: str) -> str:
        """The choice a value stands for (a synonym becomes its choice)."""
        return dict(self.aliases).get(value, value)

    def describe(self, noun: str) -> str:
        text = "one of " + ", ".join(repr(c) for c in self.choices)
        if self.aliases:
            text += " (or " + ", ".join(f"{a!r} for {c!r}" for a, c in self.aliases) + ")"
        return text


@dataclass(frozen=True)
class Matches:
    pattern: str
    meaning: str = ""  # what a match looks like, in words, for the messages

    def __call__(self, value: str) -> bool:
        return re.fullmatch(self.pattern, value) is not None

    def describe(self, noun: str) -> str:
        return f"{_article(noun)} {self.meaning or f'matching {self.pattern}'}"


@dataclass(frozen=True)
class EachMatches:
    """A list whose items each match `pattern`, none twice."""

    pattern: str
    meaning: str

    def __call__(self, value: list[str]) -> bool:
        return (len(set(value)) == len(value)
                and all(re.fullmatch(self.pattern, item) for item in value))

    def describe(self, noun: str) -> str:
        return f"a list of {self.meaning}, none twice"


@dataclass(frozen=True)
class NonEmpty:
    def __call__(self, value: Any) -> bool:
        return len(value) > 0

    def describe(self, noun: str) -> str:
        return f"a non-empty {noun}"


@dataclass(frozen=True)
class PathText:
    # NUL is the one character no file system accepts; Path.resolve() raises on it.
    allow_empty: bool = False
    max_length: int | None = None  # for a name that becomes a folder's or a record's

    def __call__(self, value: str) -> bool:
        return ("\x00" not in value and (self.allow_empty or value != "")
                and (self.max_length is None or len(value) <= self.max_length))

    def describe(self, noun: str) -> str:
        length = "" if self.max_length is None else f" of at most {self.max_length} characters"
        return ("a" if self.allow_empty else "a non-empty") + f" path{length} (no NUL characters)"


MAX_KNOB_TEXT = 1000  # characters in a string knob value


def knobs_problem(table: Any, *, non_empty: bool = True) -> str | None:
    """Why `table` is not a table of run settings (knob -> finite number, boolean or short
    printable string; never `seed`, which the engine sets for every run), or None."""
    if not isinstance(table, dict) or (non_empty and not table):
        return "not a non-empty table" if non_empty else "not a table"
    if "seed" in table:
        return "sets `seed`, which the engine sets for every run"
    for key, value in table.items():
        if isinstance(value, str):
            if len(value) > MAX_KNOB_TEXT or not value.isprintable():
                return (f"{key} is not printable text of at most {MAX_KNOB_TEXT} characters "
                        f"({len(value)} characters)")
        elif not (isinstance(value, bool) or _is_finite_number(value)):
            return f"{key} = {repr(value)[:60]} is not a finite number, a string or a boolean"
    return None


@dataclass(frozen=True)
class Knobs:
    """A table of run settings (see knobs_problem)."""

    non_empty: bool = True

    def __call__(self, value: Any) -> bool:
        return knobs_problem(value, non_empty=self.non_empty) is None

    def describe(self, noun: str) -> str:
        return (f"{'a non-empty' if self.non_empty else 'a'} {noun} of knob = finite number, "
                f"boolean or printable string of at most {MAX_KNOB_TEXT} characters, "
                "without seed (the engine sets it per run)")


Constraint = Range | OneOf | Matches | NonEmpty | PathText | Knobs


# Default markers. REQUIRED: the key must be given. Derived: filled from other values
# (the doc says how). ByKind: the default depends on [env] kind; kinds not listed require it.
REQUIRED = object()


@dataclass(frozen=True)
class Derived:
    doc: str


@dataclass(frozen=True)
class ByKind:
    defaults: dict[str, Any]


@dataclass(frozen=True)
class Field:
    type: ValueType
    default: Any
    constraint: Constraint | None = None
    doc: str = ""
    kinds: tuple[str, ...] | None = None  # [env] keys only: the env kinds the key applies to

    def accepts(self, value: Any) -> bool:
        return self.type.accepts(value) and (self.constraint is None or self.constraint(value))

    def convert(self, value: Any) -> Any:
        """An accepted value as the code reads it: its type's copy, a synonym as its choice."""
        converted = self.type.convert(value)
        canonical = getattr(self.constraint, "canonical", None)
        return canonical(converted) if canonical is not None else converted

    def allowed(self) -> str:
        if self.constraint is None:
            return _article(self.type.noun)
        return self.constraint.describe(self.type.noun)

    def default_text(self) -> str:
        """The default as the docs show it."""
        if self.default is REQUIRED:
            return "required"
        if isinstance(self.default, Derived):
            return self.default.doc
        if isinstance(self.default, ByKind):
            given = ", ".join(f"`{json.dumps(v)}` ({k})" for k, v in self.default.defaults.items())
            return f"{given}; required otherwise"
        return f"`{json.dumps(self.default)}`"


# ---------------------------------------------------------------------------------------------
# Settings: the fields of a section dataclass.

_METADATA_KEY = "engine.setting"
# The value type of a setting, from its annotation. A path is written as a string.
_ANNOTATED_TYPES: dict[Any, ValueType] = {
    int: INT, float: FLOAT, bool: BOOL, str: STR, Path: STR, dict: TABLE, list[str]: STR_LIST,
}


def setting(
    default: Any, constraint: Constraint | None = None, doc: str = "", *,
    config_only: bool = False, **field_options: Any,
) -> Any:
    """A dataclass field declared as a config setting: its config default (a value, REQUIRED or
    Derived), the constraint its values must meet, and what it means.

    A plain default is the dataclass's default too, unless `config_only` (code that builds the
    class passes the value; a config file may leave it out). `field_options` go to
    dataclasses.field (e.g. hash=False)."""
    metadata = {_METADATA_KEY: (default, constraint, doc)}
    if default is REQUIRED or isinstance(default, Derived) or config_only:
        return dataclasses.field(metadata=metadata, **field_options)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default),
                                 metadata=metadata, **field_options)
    return dataclasses.field(default=default, metadata=metadata, **field_options)


def fields_of(cls: type) -> dict[str, Field]:
    """One `Field` per setting of a section dataclass, in declaration order.

    Raises TypeError for a field not declared with `setting`, an annotation with no value type,
    or a plain default its own type or constraint refuses (a class default a config could not
    give)."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        if _METADATA_KEY not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        hint = hints[f.name]
        value_type = _ANNOTATED_TYPES.get(hint, _ANNOTATED_TYPES.get(typing.get_origin(hint)))
        if value_type is None:
            raise TypeError(f"{cls.__name__}.{f.name}: no config value type for {hint!r}")
        default, constraint, doc = f.metadata[_METADATA_KEY]
        field = Field(value_type, default, constraint, doc)
        if not (default is REQUIRED or isinstance(default, Derived)):
            if not field.accepts(default):
                raise TypeError(f"{cls.__name__}.{f.name}: default {default!r} is not "
                                f"{field.allowed()}")
            field = dataclasses.replace(field, default=value_type.convert(default))
        found[f.name] = field
    return found


def class_default(cls: type, name: str) -> Any:
    """The default of dataclass `cls`'s field `name` (so a config can take it from the class)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"{cls.__name__}.{name} has no default")
