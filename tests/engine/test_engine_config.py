"""engine.config: the schema, its messages, and garbage-in properties."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import inspect
import json
import math
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import (
    ENV_KINDS,
    SCHEMA,
    SECTION_TYPES,
    ConfigError,
    Matches,
    NonEmpty,
    OneOf,
    PathText,
    Range,
    StudySection,
    config_changes,
    config_hash,
    describe_schema,
    load_config,
    parse_config,
)
from engine.schema import REQUIRED, ByKind, EachMatches, Knobs, fields_of, setting

FULL_TOML = """
[study]
seed = 7
budget_trials = 30
budget_seconds = 120          # an int where a float is expected
replicates_per_step = 3

[env]
kind = "gpt"
backend = "cpu"
steps = 50
time_budget = 0               # ignored: steps > 0 selects fixed-step mode
base = { n_layer = 2, n_embd = 64 }

[[hypotheses]]
name = "wider"
category = "architecture"
change = { n_embd = 96 }

[[hypotheses]]
name = "lr.high-2"
change = { matrix_lr = 0.04 }
description = "higher matrix lr"

[policy]
kind = "learntropy"
kappa = 3

[decision]
threshold = 0.9
min_replicates = 2
max_replicates = 4

[proposer]
kind = "llm"
model = "openai/gpt-4o-mini"
"""

SYNTHETIC_KEYS = {k for k, f in SCHEMA["env"].items() if f.kinds is None or "synthetic" in f.kinds}


def write(tmp_path: Path, text: str, name: str = "quick.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def valid_doc(kind: str = "synthetic") -> dict:
    """A minimal valid document for each env kind."""
    env = {
        "synthetic": {"kind": "synthetic"},
        "gpt": {"kind": "gpt"},
        "command": {"kind": "command", "command": "python bench.py --seed {seed}",
                    "metric": "loss"},
        "python": {"kind": "python"},
    }[kind]
    doc = {"env": dict(env)}
    if kind != "synthetic":
        doc["hypotheses"] = [{"name": "h1", "change": {"n_layer": 3}}]
    return doc


def problems_of(doc: dict) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    return info.value.problems


# --- valid configs -----------------------------------------------------------------------------


def test_full_config_round_trips_with_defaults_filled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, FULL_TOML)
    cfg = load_config(path)

    assert cfg.study.name == "quick"  # the file stem
    assert cfg.study.out_dir == (tmp_path / "studies" / "quick").resolve()
    assert (cfg.study.seed, cfg.study.budget_trials, cfg.study.replicates_per_step) == (7, 30, 3)
    assert cfg.study.budget_seconds == 120.0 and isinstance(cfg.study.budget_seconds, float)
    assert cfg.study.base_runs == 2 and cfg.study.incumbent_runs_per_step == 1  # defaults
    assert cfg.env == {
        "kind": "gpt", "timeout_s": 600.0, "metric": "val_bpb", "direction": "lower",
        "backend": "cpu", "time_budget": 0.0, "steps": 50, "base": {"n_layer": 2, "n_embd": 64},
        "memory_limit_mb": 16384, "guard_command": "",
    }
    assert [h.name for h in cfg.hypotheses] == ["wider", "lr.high-2"]
    assert (cfg.hypotheses[0].change == {"n_embd": 96}
            and cfg.hypotheses[0].category == "architecture")
    assert (cfg.hypotheses[1].category == "general"
            and cfg.hypotheses[1].description == "higher matrix lr")
    assert cfg.policy.kind == "learntropy" and cfg.policy.kappa == 3.0 and cfg.policy.gamma == 8.0
    assert (cfg.decision.threshold, cfg.decision.min_replicates,
            cfg.decision.max_replicates) == (0.9, 2, 4)
    assert cfg.decision.epsilon == 0.0
    assert cfg.beliefs.pymc_draws == 500 and cfg.beliefs.fit_pymc is True
    assert cfg.memory.path == "" and cfg.memory.decay == 0.5
    assert cfg.proposer.model == "openai/gpt-4o-mini" and cfg.proposer.every == 10
    assert cfg.runner.kind == "local" and cfg.runner.workers == 2
    assert cfg.source_path == path.resolve()
    assert cfg.raw == tomllib.loads(FULL_TOML)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.decision.threshold = 0.5  # type: ignore[misc]


def test_env_holds_the_common_keys_and_only_those_of_its_kind():
    cfg = parse_config(valid_doc("synthetic"))
    assert set(cfg.env) == SYNTHETIC_KEYS
    assert (cfg.env["metric"] == "loss" and cfg.env["noise"] == "gaussian"
            and cfg.env["noise_df"] == 3.0)
    assert cfg.hypotheses == ()  # a synthetic world defines its own
    command = parse_config(valid_doc("command")).env
    assert command["base"] == {} and command["truth_command"] == "" and "backend" not in command


def test_out_dir_argument_overrides_and_paths_resolve_against_the_current_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    doc = {**valid_doc(), "study": {"name": "abc", "out_dir": "runs/here"}}
    assert parse_config(doc).study.out_dir == tmp_path.resolve() / "runs" / "here"
    assert parse_config(doc, out_dir="elsewhere").study.out_dir == tmp_path.resolve() / "elsewhere"
    assert parse_config(valid_doc()).study.out_dir == tmp_path.resolve() / "studies" / "study"


def test_gpt_fixed_step_mode_ignores_time_budget_but_time_mode_needs_one():
    fixed = valid_doc("gpt")
    fixed["env"].update(steps=10, time_budget=0)
    assert parse_config(fixed).env["steps"] == 10
    timed = valid_doc("gpt")
    timed["env"]["time_budget"] = 0
    [problem] = problems_of(timed)
    assert "[env] time_budget: got 0.0" in problem and "> 0 when steps = 0" in problem


# --- one mistake, one clear message --------------------------------------------------------------


def with_change(path: str, value, kind: str = "synthetic") -> dict:
    """valid_doc(kind) with `section.key` (or `hypotheses.N.key`) set to value."""
    doc = valid_doc(kind)
    *parents, key = path.split(".")
    target = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
    target[key] = value
    return doc


def extra_hypothesis(**fields) -> dict:
    doc = valid_doc("gpt")
    doc["hypotheses"].append({"name": "h2", "change": {"n_layer": 4}, **fields})
    return doc


MISTAKES = {
    "unknown section": ({**valid_doc(), "polcy": {"kind": "efe"}},
                        ["[polcy]", "unknown section", "Did you mean 'policy'?"]),
    "unknown key": (with_change("decision.treshold", 0.9),
                    ["[decision] treshold", "0.9", "Did you mean 'threshold'?",
                     "Allowed keys: threshold, epsilon"]),
    "wrong type": (with_change("study.budget_trials", "40"),
                   ["[study] budget_trials", "'40'", "an integer >= 1"]),
    "bool for int": (with_change("study.seed", True),
                     ["[study] seed", "True", "an integer >= 0", "true/false is not a number"]),
    "bool for float": (with_change("decision.epsilon", False),
                       ["[decision] epsilon", "False", "a number >= 0"]),
    "float for int": (with_change("beliefs.pymc_chains", 2.0),
                      ["[beliefs] pymc_chains", "2.0", "an integer in [1, 8]"]),
    "out of range": (with_change("decision.threshold", 1.0),
                     ["[decision] threshold", "1.0", "a number in (0.5, 1)"]),
    "nan": (with_change("env.base_value", math.nan),
            ["[env] base_value", "nan", "a number"]),
    "inf": (with_change("study.budget_seconds", math.inf),
            ["[study] budget_seconds", "inf", "a number >= 0"]),
    "bad enum": (with_change("policy.kind", "efx"),
                 ["[policy] kind", "'efx'", "one of 'design', 'voi', 'efe'"]),
    "bad env kind": (with_change("env.kind", "gtp"),
                     ["[env] kind", "'gtp'", "one of 'gpt', 'synthetic', 'command'"]),
    "min > max replicates": ({**valid_doc(),
                              "decision": {"min_replicates": 5, "max_replicates": 3}},
                             ["[decision] min_replicates", "5", "<= max_replicates (3)"]),
    "command env without command": ({"env": {"kind": "command", "metric": "loss"},
                                     "hypotheses": [{"name": "h", "change": {"x": 1}}]},
                                    ["[env] command", "missing", "required for kind = 'command'",
                                     "a non-empty string"]),
    "command env without metric": ({"env": {"kind": "command", "command": "run {seed}"},
                                    "hypotheses": [{"name": "h", "change": {"x": 1}}]},
                                   ["[env] metric", "missing", "required for kind = 'command'"]),
    "command placeholder not in base": (with_change("env.command", "bench --lr {lr} --seed {seed}",
                                                    "command"),
                                        ["[env] command", "'bench --lr {lr} --seed {seed}'", "{lr}",
                                         "keys of [env] base"]),
    "llm without model": (with_change("proposer.kind", "llm"),
                          ["[proposer] model", "''", "required when kind = 'llm'"]),
    "duplicate hypothesis name": (extra_hypothesis(name="h1"),
                                  ["[[hypotheses]] #2 (h1) name", "'h1'",
                                   "a unique name (hypothesis #1 has it)"]),
    "bad hypothesis name": (with_change("hypotheses.0.name", "wide r", "gpt"),
                            ["[[hypotheses]] #1 (wide r) name", "'wide r'",
                             "a string matching [A-Za-z0-9_.-]+"]),
    "empty change": (with_change("hypotheses.0.change", {}, "gpt"),
                     ["[[hypotheses]] #1 (h1) change", "{}", "a non-empty table"]),
    "unknown hypothesis key": (extra_hypothesis(descripton="x"),
                               ["[[hypotheses]] #2 (h2) descripton",
                                "Did you mean 'description'?"]),
    "env key of another kind": (with_change("env.noise_df", 3, "gpt"),
                                ["[env] noise_df", "got 3", "only to kind 'synthetic'",
                                 "kind = 'gpt'"]),
    "no hypotheses for gpt": ({"env": {"kind": "gpt"}},
                              ["[[hypotheses]]", "none given", "at least one",
                               "only kind = 'synthetic' may omit"]),
    "section not a table": ({**valid_doc(), "study": 3},
                            ["[study]", "got 3", "expected a table"]),
    "hypotheses not an array": ({**valid_doc(), "hypotheses": {"name": "h"}},
                                ["[[hypotheses]]", "{'name': 'h'}", "an array of tables"]),
    "date inside a table": (with_change("env.base", {"start": datetime.date(1979, 5, 27)}, "gpt"),
                            ["[env] base", "datetime.date(1979, 5, 27)", "a table"]),
    "NUL in a path": (with_change("study.out_dir", "a\x00b"),
                      ["[study] out_dir", "'a\\x00b'", "a non-empty path (no NUL characters)"]),
}


@pytest.mark.parametrize("doc, expected", MISTAKES.values(), ids=MISTAKES.keys())
def test_each_mistake_gets_one_message_naming_key_value_and_what_is_allowed(doc, expected):
    [problem] = problems_of(doc)
    for fragment in expected:
        assert fragment in problem


def test_messages_are_distinct():
    messages = [problems_of(doc)[0] for doc, _ in MISTAKES.values()]
    assert len(set(messages)) == len(messages)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(f"file not found: {missing}")):
        load_config(missing)


def test_invalid_toml_reports_line_and_column(tmp_path):
    path = write(tmp_path, '[study]\nseed = 1\nname = "unterminated\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert "not valid TOML" in problem and "line 3, column" in problem
    assert str(path) in str(info.value)


def test_all_errors_are_reported_together_one_per_line(tmp_path):
    path = write(tmp_path, """
[study]
seed = -1
[env]
kind = "gpt"
noise = "gaussian"
[decision]
threshold = 2
[policy]
gama = 8.0
[[hypotheses]]
name = "a b"
change = {}
""")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    for where in ["[study] seed", "[env] noise", "[decision] threshold", "[policy] gama",
                  "#1 (a b) name", "#1 (a b) change"]:
        assert sum(where in p for p in problems) == 1, where
    assert len(problems) == 6
    lines = str(info.value).splitlines()
    assert "6 problems" in lines[0] and lines[1:] == ["  " + p for p in problems]


# --- the schema and its documentation ----------------------------------------------------------


def test_the_schema_is_read_from_the_section_dataclasses():
    for section, cls in SECTION_TYPES.items():
        assert [f.name for f in dataclasses.fields(cls)] == list(SCHEMA[section]), section
        for f in dataclasses.fields(cls):  # where the class has a default, it is the config's
            if f.default is not dataclasses.MISSING:
                assert SCHEMA[section][f.name].default == f.default, (section, f.name)
    assert parse_config(valid_doc()).study.seed == StudySection("s", Path("o")).seed == 0


def test_a_setting_must_be_declared_with_its_type_and_a_default_it_accepts():
    @dataclasses.dataclass(frozen=True)
    class Plain:
        count: int = 3

    @dataclasses.dataclass(frozen=True)
    class BadDefault:
        count: int = setting(0, Range(1), "runs")

    @dataclasses.dataclass(frozen=True)
    class Untyped:
        pairs: tuple = setting((), None, "pairs")

    for cls, message in ((Plain, "not declared with setting"),
                         (BadDefault, "default 0 is not an integer >= 1"),
                         (Untyped, "no config value type")):
        with pytest.raises(TypeError, match=message):
            fields_of(cls)


def test_policy_and_keep_rule_defaults_are_the_classes_own():
    from policies import POLICIES, KeepRule

    assert set(SCHEMA["policy"]["kind"].constraint.choices) == set(POLICIES)
    cfg = parse_config(valid_doc())
    assert cfg.decision.keep_rule() == KeepRule()
    for cls in POLICIES.values():
        for f in dataclasses.fields(cls):
            if f.name in SCHEMA["policy"]:
                assert getattr(cfg.policy, f.name) == f.default, (cls.__name__, f.name)


def test_env_defaults_are_those_of_the_env_classes():
    # envs/ imports nothing of the engine, so the [env] declaration is checked against it here.
    from envs import ENVS

    assert set(ENV_KINDS) == set(ENVS)
    for kind, env_class in ENVS.items():
        keys = {k for k, f in SCHEMA["env"].items() if f.kinds is None or kind in f.kinds}
        assert keys - {"kind"} == env_class.section_keys, kind
        parameters = inspect.signature(env_class).parameters
        for key in env_class.section_keys:
            default = SCHEMA["env"][key].default
            if isinstance(default, ByKind):
                default = default.defaults.get(kind, REQUIRED)
            given = parameters[key].default
            if given is inspect.Parameter.empty:
                given = REQUIRED
            elif key == "base" and given is None:  # no base = an empty one
                given = {}
            assert (list(given) if isinstance(given, tuple) else given) == default, (kind, key)


def test_describe_schema_lists_every_key_under_its_section():
    doc = describe_schema()
    blocks = dict(re.findall(r"### `\[+(\w+)\]+`\n(.*?)(?=\n### |\Z)", doc, flags=re.S))
    assert set(blocks) == set(SCHEMA)
    for section, fields in SCHEMA.items():
        for key, field in fields.items():
            row = next(line for line in blocks[section].splitlines()
                       if line.startswith(f"| `{key}` |"))
            assert field.allowed() in row
    assert "| `noise_df` | synthetic | number | `3.0` | a number > 2 |" in doc


# --- properties --------------------------------------------------------------------------------

ALL_KEYS = [(section, key) for section, fields in SCHEMA.items() for key in fields]
CHOICES = sorted({c for fields in SCHEMA.values() for f in fields.values()
                  if isinstance(f.constraint, OneOf) for c in f.constraint.choices})
# TOML cannot hold surrogates
toml_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)

scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),  # TOML's integer range
    st.integers(-3, 70),  # near the schema's bounds, so valid values are common too
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-3, 70),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.booleans(),
    toml_text,
    st.sampled_from([*CHOICES, "", "a b", "h.2-x_y"]),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(toml_text, inner, max_size=3),
    max_leaves=6,
)


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML escapes DEL
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_literal, value)) + "]"
    return "{" + ", ".join(f"{toml_literal(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict) -> str:
    lines = []
    for section, body in doc.items():
        tables = ([(f"[[{section}]]", t) for t in body] if isinstance(body, list)
                  else [(f"[{section}]", body)])
        for heading, table in tables:
            lines += [heading,
                      *(f"{toml_literal(k)} = {toml_literal(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def plain_data(value) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is list:
        return all(map(plain_data, value))
    if type(value) is dict:
        return all(plain_data(v) for v in value.values())
    return type(value) in (str, int, bool)


def documented_ok(field, value) -> bool:
    """The documented type and constraint, checked independently of engine.config's own checks."""
    noun = field.type.noun
    if noun == "integer":
        ok = type(value) is int
    elif noun == "number":  # an integer is a number too
        ok = type(value) in (int, float) and math.isfinite(value)
    elif noun.startswith("boolean"):
        ok = type(value) is bool
    elif noun == "string":
        ok = type(value) is str
    elif noun == "table":  # of JSON-like data: what the ledger can record
        ok = type(value) is dict and plain_data(value)
    else:
        ok = type(value) is list and all(type(x) is str for x in value)
    c = field.constraint
    if not ok or c is None:
        return ok
    if isinstance(c, Range):
        return ((c.lo is None or value > c.lo or (not c.lo_open and value == c.lo))
                and (c.hi is None or value < c.hi or (not c.hi_open and value == c.hi)))
    if isinstance(c, OneOf):
        return value in c.choices or value in dict(c.aliases)
    if isinstance(c, Matches):
        return re.fullmatch(c.pattern, value) is not None
    if isinstance(c, NonEmpty):
        return len(value) > 0
    if isinstance(c, EachMatches):  # device slots: "cpu" or "cuda:<digits>", none twice
        return (len(set(value)) == len(value)
                and all(x == "cpu" or re.fullmatch(r"cuda:\d+", x, re.ASCII) for x in value))
    if isinstance(c, Knobs):  # flat: knob -> finite number, bool or short printable text
        return ((len(value) > 0 or not c.non_empty) and "seed" not in value
                and all((type(v) is str and len(v) <= 1000 and v.isprintable())
                        or type(v) in (int, bool)
                        or (type(v) is float and math.isfinite(v)) for v in value.values()))
    assert isinstance(c, PathText)
    return ("\x00" not in value and (c.allow_empty or value != "")
            and (c.max_length is None or len(value) <= c.max_length))


def edges(field) -> list:
    """Values on and just beside a field's documented boundary, which random draws rarely hit."""
    c = field.constraint
    if isinstance(c, Range):
        near = [b for b in (c.lo, c.hi) if b is not None]
        return [*near, *map(float, near), *(b + d for b in near for d in (-1, 1)),
                *(math.nextafter(b, d) for b in near for d in (-math.inf, math.inf))]
    if isinstance(c, OneOf):
        return [*c.choices, *(x.upper() for x in c.choices), *dict(c.aliases)]
    if isinstance(c, EachMatches):
        return [[], ["cpu"], ["cuda:0", "cuda:1"], ["cuda:0", "cuda:0"], ["cuda:x"], ["gpu"]]
    return ["", "ok_name-1.2", "a b", "\x00"] if field.type.noun == "string" else [{}, [], 0]


def doc_with(section: str, key: str, value, kind: str) -> dict:
    field = SCHEMA[section][key]
    if field.kinds and kind not in field.kinds:
        kind = field.kinds[0]
    doc = valid_doc(kind)
    if section == "hypotheses":
        doc["hypotheses"] = [{"name": "h1", "change": {"x": 1}, key: value}]
    else:
        doc.setdefault(section, {})[key] = value
    return doc


def validated_value(cfg, section: str, key: str):
    if section == "env":
        return cfg.env[key]
    if section == "hypotheses":
        return getattr(cfg.hypotheses[0], key)
    return getattr(getattr(cfg, section), key)


# Keys whose valid values can still be refused by a cross-field rule (each rule has its own test).
CROSS_FIELD_KEYS = {("env", "kind"), ("env", "time_budget"), ("env", "command"),
                    ("env", "truth_command"), ("decision", "min_replicates"),
                    ("decision", "max_replicates"), ("proposer", "kind"),
                    ("runner", "devices"), ("hypotheses", "change"), ("hypotheses", "patch"),
                    ("env", "guard_command")}


@pytest.mark.parametrize("section, key", ALL_KEYS, ids=[f"{s}.{k}" for s, k in ALL_KEYS])
@settings(max_examples=25, deadline=None)
@given(data=st.data(), kind=st.sampled_from(ENV_KINDS))
def test_garbage_toml_values_are_accepted_only_when_documented_valid(section, key, data, kind):
    field = SCHEMA[section][key]
    value = data.draw(st.one_of(st.sampled_from(edges(field)), toml_values), label="value")
    text = toml_document(doc_with(section, key, value, kind))
    parsed = tomllib.loads(text)  # the test's own TOML writer must be right
    written = (parsed["hypotheses"][0] if section == "hypotheses" else parsed[section])[key]
    try:
        cfg = parse_config(parsed)
    except ConfigError as err:
        assert all(isinstance(p, str) and "\n" not in p for p in err.problems)
        assert (section, key) in CROSS_FIELD_KEYS or not documented_ok(field, written), err.problems
        assert any(key in p for p in err.problems)  # the message names the key
        return
    assert documented_ok(field, written), written
    got = validated_value(cfg, section, key)
    if key == "out_dir":
        assert got == Path(written).resolve()
    elif isinstance(field.constraint, OneOf):  # a synonym is read as the choice it names
        assert got == dict(field.constraint.aliases).get(written, written)
    else:
        is_number = field.type.noun == "number"  # ints become floats (huge ones round)
        assert (got == (float(written) if is_number else written)
                and (not is_number or type(got) is float))


python_garbage = st.recursive(
    st.one_of(scalars, st.none(), st.just(10**400), st.binary(max_size=3), st.just(object()),
              st.tuples(st.integers()), st.dates(), st.frozensets(st.integers(), max_size=2)),
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), inner,
                                     max_size=3)),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([*ALL_KEYS, ("hypotheses", None), ("env", None), ("study", None),
                        (None, None)]),
       python_garbage, st.sampled_from(ENV_KINDS))
def test_python_garbage_raises_only_config_error(where, value, kind):
    # The benchmark builds configs in code, so values TOML cannot express must be refused cleanly
    # too.
    section, key = where
    if section is None:
        doc = value  # the whole document
    elif key is None:
        doc = {**valid_doc(kind), section: value}  # a whole section
    else:
        doc = doc_with(section, key, value, kind)
    try:
        cfg = parse_config(doc)
    except ConfigError:
        return
    assert re.fullmatch(r"[0-9a-f]{64}", config_hash(cfg))  # whatever is accepted can be hashed


def shuffled(rng_order, value):
    """`value` with every table's keys in the order chosen by rng_order."""
    if isinstance(value, dict):
        keys = rng_order(list(value))
        return {k: shuffled(rng_order, value[k]) for k in keys}
    if isinstance(value, list):
        return [shuffled(rng_order, v) for v in value]
    return value


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False))
def test_config_hash_is_stable_across_key_order(rnd):
    doc = tomllib.loads(FULL_TOML)
    reordered = shuffled(lambda keys: rnd.sample(keys, len(keys)), doc)
    assert config_hash(parse_config(reordered)) == config_hash(parse_config(doc))


def test_config_hash_tracks_values_not_spelling_or_location(tmp_path):
    doc = tomllib.loads(FULL_TOML)
    base = config_hash(parse_config(doc))
    assert base == config_hash(parse_config(doc, out_dir=str(tmp_path)))  # where it is written
    spelled = copy.deepcopy(doc)
    spelled["study"]["budget_seconds"] = 120.0  # int vs float spelling of the same value
    spelled["beliefs"] = {"pymc_draws": 500}  # a default written out
    assert config_hash(parse_config(spelled)) == base
    changed = copy.deepcopy(doc)
    changed["hypotheses"][0]["change"]["n_embd"] = 97
    assert config_hash(parse_config(changed)) != base
    assert re.fullmatch(r"[0-9a-f]{64}", base)


def test_config_changes_name_what_the_hash_sees_and_leave_out_the_runner():
    doc = tomllib.loads(FULL_TOML)
    changed = copy.deepcopy(doc)
    changed["hypotheses"][0]["change"]["n_embd"] = 97
    changed["study"]["budget_seconds"] = 7
    changed["runner"] = {"kind": "parallel", "workers": 3}
    before, after = parse_config(doc), parse_config(changed)
    assert config_changes(before, before) == []
    changes = config_changes(before, after)
    assert changes[0].startswith("[[hypotheses]] 1: ") and "97" in changes[0]
    assert changes[1:] == [f"[study] budget_seconds: {before.study.budget_seconds!r} -> 7.0"]
    fleet = copy.deepcopy(doc)
    fleet["runner"] = {"kind": "parallel", "workers": 3}
    assert config_hash(parse_config(fleet)) == config_hash(before)  # resumable on another fleet


def test_the_config_reference_in_docs_is_generated_from_the_schema():
    from engine.config import render_reference

    docs = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"
    assert docs.read_text() == render_reference(), (
        "regenerate: python -m engine.config > docs/CONFIG.md")


def test_config_errors_survive_pickling_from_a_worker_process():
    import pickle

    from engine.config import ConfigError

    error = pickle.loads(pickle.dumps(ConfigError("bench.toml", ["[study] seed: got -1"])))
    assert error.problems == ("[study] seed: got -1",) and "bench.toml" in str(error)


@pytest.mark.parametrize("written, read", [("minimize", "lower"), ("maximize", "higher"),
                                           ("lower", "lower"), ("higher", "higher")])
def test_optunas_direction_words_are_synonyms_and_hash_as_ours(written, read):
    doc = valid_doc("synthetic")
    ours = copy.deepcopy(doc)
    doc["env"]["direction"], ours["env"]["direction"] = written, read
    cfg = parse_config(doc)
    assert cfg.env["direction"] == read
    assert config_hash(cfg) == config_hash(parse_config(ours))


def test_a_wrong_direction_names_the_synonyms():
    doc = valid_doc("synthetic")
    doc["env"]["direction"] = "max"
    with pytest.raises(ConfigError, match="'maximize' for 'higher'"):
        parse_config(doc)


def test_a_guard_command_with_an_unknown_placeholder_is_refused_up_front():
    doc = {"env": {"kind": "gpt", "steps": 3, "guard_command": "{python} -m pytest {tests}"},
           "hypotheses": [{"name": "h", "change": {"depth": 2}}]}
    problems = problems_of(doc)
    assert any(p.startswith("[env] guard_command: got '{python} -m pytest {tests}', which uses "
                            "placeholder(s) {tests}") for p in problems), problems
