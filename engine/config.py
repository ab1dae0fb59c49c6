"""The study config file: one declarative schema, one generic validator, typed results.

`SCHEMA` lists every key of every section with its type, default, constraint and meaning.
`parse_config` checks a parsed TOML document against it, applies the few cross-field rules,
and returns frozen dataclasses; every problem in the file is collected and raised together
as one `ConfigError`, before any run starts. `describe_schema` renders the same table as
Markdown, so the documentation cannot drift from what is enforced. The exact schema is the
table in docs/CONFIG.md (generated from it).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
import reprlib
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from policies.types import KEEP_SPENDING

__all__ = [
    "ConfigError",
    "StudyConfig",
    "StudySection",
    "HypothesisSpec",
    "BeliefsSection",
    "PolicySection",
    "DecisionSection",
    "MemorySection",
    "ProposerSection",
    "RunnerSection",
    "SCHEMA",
    "ENV_KINDS",
    "load_config",
    "parse_config",
    "config_hash",
    "describe_schema",
]


class ConfigError(ValueError):
    """Every problem found in one config, one per line; `problems` holds them separately."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = tuple(problems)
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(
            "\n".join([f"invalid config {source} ({count}):", *("  " + p for p in problems)]))

    def __reduce__(self):  # picklable, so an error in a benchmark worker process reaches the parent
        return (ConfigError, (self.source, list(self.problems)))


# ---------------------------------------------------------------------------------------------
# Value types and constraints: the vocabulary the schema table is written in.


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

    def __call__(self, value: str) -> bool:
        return value in self.choices

    def describe(self, noun: str) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


@dataclass(frozen=True)
class Matches:
    pattern: str

    def __call__(self, value: str) -> bool:
        return re.fullmatch(self.pattern, value) is not None

    def describe(self, noun: str) -> str:
        return f"{_article(noun)} matching {self.pattern}"


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

    def __call__(self, value: str) -> bool:
        return "\x00" not in value and (self.allow_empty or value != "")

    def describe(self, noun: str) -> str:
        return ("a" if self.allow_empty else "a non-empty") + " path (no NUL characters)"


Constraint = Range | OneOf | Matches | NonEmpty | PathText


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

    def allowed(self) -> str:
        if self.constraint is None:
            return _article(self.type.noun)
        return self.constraint.describe(self.type.noun)


# ---------------------------------------------------------------------------------------------
# The schema. Adding a key is one line here plus the field on its section's dataclass.

ENV_KINDS = ("gpt", "synthetic", "command")
POLICY_KINDS = ("efe", "learntropy", "thompson", "ucb", "greedy", "random", "ratchet")
HYPOTHESIS_NAME = r"[A-Za-z0-9_.-]+"
GPT, SYNTHETIC, COMMAND = ("gpt",), ("synthetic",), ("command",)

SCHEMA: dict[str, dict[str, Field]] = {
    "study": {
        "name": Field(
            STR, Derived("the config file's stem"), PathText(),
            "names the study and its folder",
        ),
        "out_dir": Field(
            STR, Derived('"studies/<name>"'), PathText(),
            "study folder, relative to the current directory; `--out` overrides it",
        ),
        "seed": Field(INT, 0, Range(0), "master seed for run seeds and policy choices"),
        "budget_trials": Field(
            INT, 40, Range(1),
            "total runs (candidate and incumbent runs both count)",
        ),
        "budget_seconds": Field(FLOAT, 0.0, Range(0), "wall-clock limit in seconds; 0 = none"),
        "replicates_per_step": Field(
            INT, 2, Range(1, 64),
            "candidate runs per step (the policy may choose fewer)",
        ),
        "incumbent_runs_per_step": Field(
            INT, 1, Range(0, 64),
            "paired incumbent re-runs per step (same seeds)",
        ),
        "adaptive_incumbent_runs": Field(
            BOOL, True, None,
            "pair a step with its incumbent runs only when they narrow the posterior of "
            "mu(candidate) - mu(incumbent) at least as much as the same number of "
            "extra candidate runs would; false = every step",
        ),
        "base_runs": Field(INT, 2, Range(1, 64), "runs of the base config before the first step"),
    },
    "env": {
        "kind": Field(STR, REQUIRED, OneOf(ENV_KINDS), "what is being optimised"),
        "timeout_s": Field(FLOAT, 600.0, Range(0, lo_open=True), "per-run timeout in seconds"),
        "metric": Field(
            STR, ByKind({"gpt": "val_bpb", "synthetic": "loss"}), NonEmpty(),
            "name of the metric a run reports",
        ),
        "direction": Field(
            STR, "lower", OneOf(("lower", "higher")),
            "whether lower or higher metric values are better",
        ),
        "backend": Field(
            STR, "auto", OneOf(("auto", "cpu", "cuda", "mps", "mlx")),
            "trainer backend", GPT,
        ),
        "time_budget": Field(
            FLOAT, 30.0, Range(0),
            "seconds of training per run; must be > 0 unless `steps` > 0", GPT,
        ),
        "steps": Field(
            INT, 0, Range(0),
            "> 0 selects fixed-step mode (then `time_budget` is ignored)", GPT,
        ),
        "base": Field(
            TABLE, {}, None,
            "base config: trainer knobs (gpt) or values for `{param}` placeholders (command)",
            GPT + COMMAND,
        ),
        "world_seed": Field(
            INT, 0, Range(0),
            "draws the world (effects), separate from run seeds", SYNTHETIC,
        ),
        "n_hypotheses": Field(INT, 20, Range(2, 2000), "hypotheses the world defines", SYNTHETIC),
        "categories": Field(
            STR_LIST, ["architecture", "optimizer", "schedule", "data"], NonEmpty(),
            "hypothesis categories", SYNTHETIC,
        ),
        "p_improve": Field(
            FLOAT, 0.2, Range(0, 1),
            "share of hypotheses that truly improve", SYNTHETIC,
        ),
        "effect_size": Field(
            FLOAT, 1.0, Range(0, lo_open=True),
            "typical |effect| of a real change, metric units", SYNTHETIC,
        ),
        "noise_sd": Field(
            FLOAT, 1.0, Range(0, lo_open=True),
            "run-to-run sd, metric units", SYNTHETIC,
        ),
        "noise": Field(
            STR, "gaussian", OneOf(("gaussian", "student_t")),
            "noise distribution", SYNTHETIC,
        ),
        "noise_df": Field(
            FLOAT, 3.0, Range(2, lo_open=True),
            "degrees of freedom (used when noise = \"student_t\")", SYNTHETIC,
        ),
        "heteroscedastic": Field(
            FLOAT, 0.0, Range(0),
            "extra noise sd per applied hypothesis, relative", SYNTHETIC,
        ),
        "n_interactions": Field(INT, 0, Range(0), "pairwise interaction terms", SYNTHETIC),
        "interaction_size": Field(
            FLOAT, 1.0, Range(0),
            "typical interaction size, metric units", SYNTHETIC,
        ),
        "crash_prob": Field(
            FLOAT, 0.0, Range(0, 1, hi_open=True),
            "probability that a run crashes", SYNTHETIC,
        ),
        "base_value": Field(FLOAT, 10.0, None, "the base config's true mean", SYNTHETIC),
        "seconds_per_run": Field(
            FLOAT, 1.0, Range(0, lo_open=True),
            "simulated seconds a run reports (nothing sleeps)", SYNTHETIC,
        ),
        "command": Field(
            STR, REQUIRED, NonEmpty(),
            "template with `{seed}` and `{param}` placeholders; "
            "shlex-split and run without a shell",
            COMMAND,
        ),
        "truth_command": Field(
            STR, "", None,
            "optional template that prints the noise-free metric", COMMAND,
        ),
        "cwd": Field(
            STR, "", PathText(allow_empty=True),
            "optional working directory for the command", COMMAND,
        ),
    },
    # [[hypotheses]]: an array of tables, each checked against these fields.
    "hypotheses": {
        "name": Field(STR, REQUIRED, Matches(HYPOTHESIS_NAME), "unique name"),
        "category": Field(STR, "general", NonEmpty(), "category, for category-level effects"),
        "change": Field(TABLE, REQUIRED, NonEmpty(), "merged into the base config when applied"),
        "description": Field(STR, "", None, "free text"),
    },
    "beliefs": {
        "interactions": Field(BOOL, False, None, "model pairwise interactions"),
        "prior_effect_sd": Field(
            FLOAT, 0.5, Range(0, lo_open=True),
            "prior sd of an effect, standardised units",
        ),
        "prior_noise_df": Field(
            FLOAT, 1.0, Range(0, lo_open=True),
            "weight of the noise prior in runs (inverse-gamma a0 = df/2), "
            "centred on the sd of all runs",
        ),
        "null_share": Field(
            FLOAT, 0.5, Range(0, 1, hi_open=True),
            "prior guess of the share of changes that do nothing (spike-and-slab; 0 = no spike)",
        ),
        "fit_pymc": Field(BOOL, True, None, "full-Bayes PyMC fit for the report at the end"),
        "pymc_draws": Field(INT, 500, Range(50), "PyMC draws per chain"),
        "pymc_tune": Field(INT, 500, Range(50), "PyMC tuning steps per chain"),
        "pymc_chains": Field(INT, 2, Range(1, 8), "PyMC chains"),
    },
    "policy": {
        "kind": Field(STR, "efe", OneOf(POLICY_KINDS), "which policy chooses the next action"),
        "gamma": Field(FLOAT, 8.0, Range(0, lo_open=True), "softmax precision"),
        "preference": Field(
            FLOAT, 1.0, Range(0, lo_open=True),
            "lambda: nats per standardised unit of metric",
        ),
        "cost_weight": Field(FLOAT, 0.0, Range(0), "nats per expected second"),
        "epistemic": Field(BOOL, True, None, "include the epistemic (information) term"),
        "pragmatic": Field(BOOL, True, None, "include the pragmatic (preference) term"),
        "cost": Field(BOOL, True, None, "include the cost term"),
        "kappa": Field(FLOAT, 2.0, Range(1), "learntropy kappa"),
        "ucb_beta": Field(FLOAT, 2.0, Range(0, lo_open=True), "UCB exploration weight"),
    },
    "decision": {
        "threshold": Field(
            FLOAT, 0.95, Range(0.5, 1, lo_open=True, hi_open=True),
            "posterior probability of improvement needed to keep",
        ),
        "epsilon": Field(FLOAT, 0.0, Range(0), "minimum improvement that counts, metric units"),
        "max_replicates": Field(
            INT, 24, Range(1),
            "runs of one trial of a candidate after which, still undecided, it is reverted",
        ),
        "min_replicates": Field(INT, 2, Range(1), "runs before any verdict; <= max_replicates"),
        "futility": Field(
            FLOAT, 0.3, Range(0, 1, lo_open=True, hi_open=True),
            "revert a trial when the predictive probability that its remaining runs "
            "(up to max_replicates) reach a keep is below this",
        ),
        "spending": Field(
            STR, "none", OneOf(KEEP_SPENDING),
            "how the threshold is spread over the looks at one hypothesis: "
            "\"none\" = the posterior threshold at every look "
            "(the spike-and-slab prior already counts nulls); "
            "a group-sequential design bounds each null's keep chance instead",
        ),
    },
    "memory": {
        "path": Field(
            STR, "", PathText(allow_empty=True),
            'shared memory database for transfer across studies ("" = none)',
        ),
        "decay": Field(FLOAT, 0.5, Range(0, 1, lo_open=True, hi_open=True), "activation decay d"),
        "recall_k": Field(INT, 5, Range(0), "episodes recalled per step"),
        "transfer": Field(BOOL, True, None, "use insights from earlier studies as priors"),
    },
    "proposer": {
        "kind": Field(
            STR, "builtin", OneOf(("builtin", "llm")),
            "where candidate hypotheses come from",
        ),
        "model": Field(STR, "", None, "litellm model string (required for kind = \"llm\")"),
        "max_new": Field(INT, 3, Range(0), "hypotheses the LLM may add per call"),
        "every": Field(INT, 10, Range(1), "call the LLM every N steps"),
        "mock_response": Field(STR, "", None, "litellm's offline mock response (tests)"),
    },
    "runner": {
        "kind": Field(STR, "local", OneOf(("local", "parallel", "ray")), "how runs are executed"),
        "workers": Field(INT, 2, Range(1), "parallel workers"),
    },
}
ARRAY_SECTIONS = frozenset({"hypotheses"})


# ---------------------------------------------------------------------------------------------
# The validated config.


@dataclass(frozen=True)
class StudySection:
    name: str
    out_dir: Path  # absolute
    seed: int
    budget_trials: int
    budget_seconds: float
    replicates_per_step: int
    incumbent_runs_per_step: int
    adaptive_incumbent_runs: bool
    base_runs: int


@dataclass(frozen=True)
class HypothesisSpec:
    name: str
    category: str
    change: dict[str, Any]
    description: str


@dataclass(frozen=True)
class BeliefsSection:
    interactions: bool
    prior_effect_sd: float
    prior_noise_df: float
    null_share: float
    fit_pymc: bool
    pymc_draws: int
    pymc_tune: int
    pymc_chains: int


@dataclass(frozen=True)
class PolicySection:
    kind: str
    gamma: float
    preference: float
    cost_weight: float
    epistemic: bool
    pragmatic: bool
    cost: bool
    kappa: float
    ucb_beta: float


@dataclass(frozen=True)
class DecisionSection:
    threshold: float
    epsilon: float
    max_replicates: int
    min_replicates: int
    futility: float
    spending: str


@dataclass(frozen=True)
class MemorySection:
    path: str
    decay: float
    recall_k: int
    transfer: bool


@dataclass(frozen=True)
class ProposerSection:
    kind: str
    model: str
    max_new: int
    every: int
    mock_response: str


@dataclass(frozen=True)
class RunnerSection:
    kind: str
    workers: int


SECTION_TYPES: dict[str, type] = {
    "study": StudySection,
    "hypotheses": HypothesisSpec,
    "beliefs": BeliefsSection,
    "policy": PolicySection,
    "decision": DecisionSection,
    "memory": MemorySection,
    "proposer": ProposerSection,
    "runner": RunnerSection,
}


@dataclass(frozen=True)
class StudyConfig:
    study: StudySection
    env: dict[str, Any]  # the validated [env] table: common keys plus those of its kind
    hypotheses: tuple[HypothesisSpec, ...]
    beliefs: BeliefsSection
    policy: PolicySection
    decision: DecisionSection
    memory: MemorySection
    proposer: ProposerSection
    runner: RunnerSection
    source_path: Path
    raw: dict[str, Any]  # the parsed document as written, for the ledger


# ---------------------------------------------------------------------------------------------
# Validation.

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 5, 5


def _heading(section: str) -> str:
    return f"[[{section}]]" if section in ARRAY_SECTIONS else f"[{section}]"


def _got(value: Any) -> str:
    return _short.repr(value)


def _suggest(key: Any, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1) if isinstance(key, str) else []
    return f" Did you mean {close[0]!r}?" if close else ""


def _unknown_key(
    where: str, key: Any, value: Any, fields: dict[str, Field], env_kind: str | None
) -> str:
    loc = f"{where} {key}"
    field = fields.get(key)
    if field is not None and field.kinds is not None:
        owners = " or ".join(repr(k) for k in field.kinds)
        return (f"{loc}: got {_got(value)}, but this key applies only to kind {owners}, "
                f"and this [env] has kind = {env_kind!r}")
    valid = [k for k, f in fields.items() if f.kinds is None or env_kind in f.kinds]
    return (f"{loc}: unknown key (value {_got(value)}).{_suggest(key, valid)} "
            f"Allowed keys: {', '.join(valid)}")


def _validate_table(
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
            values[key] = field.type.convert(value)
        else:
            not_a_number = isinstance(value, bool) and field.type in (INT, FLOAT)
            hint = " (true/false is not a number)" if not_a_number else ""
            problems.append(f"{where} {key}: got {_got(value)}, expected {field.allowed()}{hint}")
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


def _validate_hypotheses(entries: Any, problems: list[str]) -> list[dict[str, Any]]:
    if not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
        problems.append(f"[[hypotheses]]: got {_got(entries)}, "
                        "expected an array of tables (one [[hypotheses]] block per hypothesis)")
        return []
    hypotheses, first_index = [], {}
    for index, entry in enumerate(entries, start=1):
        label = entry.get("name") if isinstance(entry.get("name"), str) else None
        where = f"[[hypotheses]] #{index}" + (f" ({label})" if label else "")
        values = _validate_table(where, entry, SCHEMA["hypotheses"], problems)
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


def _cross_field_problems(tables: dict[str, dict], hypotheses_given: bool) -> list[str]:
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
    kind = env.get("kind")
    if kind == "gpt" and env.get("steps") == 0 and env.get("time_budget") == 0:
        problems.append("[env] time_budget: got 0.0, "
                        "expected a number > 0 when steps = 0 "
                        "(or set steps > 0 for fixed-step mode)")
    if kind == "command" and "base" in env:
        known = {"seed", *env["base"]}
        for key in ("command", "truth_command"):
            reason = _template_problem(env.get(key, ""), known)
            if reason:
                problems.append(f"[env] {key}: got {_got(env[key])}, which {reason}")
    if kind in ("gpt", "command") and not hypotheses_given:
        problems.append("[[hypotheses]]: none given; "
                        "expected at least one [[hypotheses]] block "
                        "(only kind = 'synthetic' may omit them)")
    return problems


def parse_config(
    data: dict, *, source: str = "<dict>", out_dir: str | None = None
) -> StudyConfig:
    """Validate a parsed config document; raise ConfigError listing every problem.

    `source` names the document in messages; its file stem is the default study name
    ("study" for the default "<dict>"). `out_dir` overrides [study] out_dir (the CLI's --out).
    """
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the document: got {_got(data)}, expected a table of sections"])
    problems: list[str] = []
    for section, value in data.items():
        if section not in SCHEMA:
            sections = ", ".join(map(_heading, SCHEMA))
            problems.append(f"[{section}]: unknown section.{_suggest(section, list(SCHEMA))} "
                            f"Sections: {sections}")
    tables: dict[str, dict[str, Any]] = {}
    for section, fields in SCHEMA.items():
        if section in ARRAY_SECTIONS:
            continue
        table = data.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"[{section}]: got {_got(table)}, expected a table")
            continue
        kind = table.get("kind") if section == "env" else None
        env_kind = kind if kind in ENV_KINDS else None
        tables[section] = _validate_table(
            f"[{section}]", table, fields, problems, env_kind=env_kind)
    hypotheses = _validate_hypotheses(data.get("hypotheses", []), problems)
    problems += _cross_field_problems(tables, hypotheses_given=bool(data.get("hypotheses")))
    if problems:
        raise ConfigError(source, problems)

    study = tables["study"]
    study.setdefault("name", "study" if source == "<dict>" else Path(source).stem)
    study.setdefault("out_dir", f"studies/{study['name']}")
    # Relative to the current directory (where the command was typed), not the config file.
    study["out_dir"] = (
        Path(out_dir if out_dir is not None else study["out_dir"]).expanduser().resolve())
    sections = {
        name: SECTION_TYPES[name](**values) for name, values in tables.items() if name != "env"
    }
    return StudyConfig(
        **sections,
        env=tables["env"],
        hypotheses=tuple(HypothesisSpec(**h) for h in hypotheses),
        source_path=Path(source),
        raw=copy.deepcopy(data),
    )


def load_config(path: str | Path, *, out_dir: str | None = None) -> StudyConfig:
    """Read and validate a TOML config file; raise ConfigError on any problem."""
    path = Path(path).expanduser().resolve()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), [f"file not found: {path}"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read {path}: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None  # names line and column
    return parse_config(data, source=str(path), out_dir=out_dir)


def config_hash(cfg: StudyConfig) -> str:
    """sha256 of the canonical JSON of the validated config (defaults filled, keys sorted).

    Leaves out where the study is written (out_dir), where the file was (source_path) and
    how it was spelled (raw), so the same study hashes the same from any directory.
    """
    validated = {
        "env": cfg.env,
        "hypotheses": [dataclasses.asdict(h) for h in cfg.hypotheses],
        **{
            name: dataclasses.asdict(getattr(cfg, name))
            for name in SECTION_TYPES
            if name != "hypotheses"
        },
    }
    del validated["study"]["out_dir"]
    canonical = json.dumps(validated, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Documentation, rendered from the schema.


def _render_default(default: Any) -> str:
    if default is REQUIRED:
        return "required"
    if isinstance(default, Derived):
        return default.doc
    if isinstance(default, ByKind):
        given = ", ".join(f"`{json.dumps(v)}` ({k})" for k, v in default.defaults.items())
        return f"{given}; required otherwise"
    return f"`{json.dumps(default)}`"


def describe_schema() -> str:
    """Markdown: one table per section with every key's type, default, allowed values and
    meaning."""
    out = []
    for section, fields in SCHEMA.items():
        heading = _heading(section)
        has_kinds = any(f.kinds for f in fields.values())
        columns = [
            "key", *(["env kind"] if has_kinds else []), "type", "default", "allowed", "meaning",
        ]
        out += [
            f"### `{heading}`", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
        ]
        for key, field in fields.items():
            cells = [
                f"`{key}`",
                *([", ".join(field.kinds) if field.kinds else "all"] if has_kinds else []),
                field.type.noun,
                _render_default(field.default),
                field.allowed(),
                field.doc,
            ]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def render_reference() -> str:
    """docs/CONFIG.md: the key reference, generated so the docs cannot drift from the schema."""
    return ("# Config reference\n\nGenerated from `engine/config.py` by "
            "`python -m engine.config > docs/CONFIG.md`; a test fails when it drifts.\n\n"
            + describe_schema())


if __name__ == "__main__":
    print(render_reference(), end="")
