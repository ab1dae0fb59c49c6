"""The study config file: each key declared once, one generic validator, typed results.

The sections are frozen dataclasses whose fields carry their default, constraint and meaning
(engine.sections, written with engine.schema's `setting`); `SCHEMA` (section -> key -> `Field`)
is read from them. `parse_config` checks a parsed TOML document against it (engine.validate),
applies the few cross-field rules, and returns the frozen dataclasses; every problem in the file
is collected and raised together as one `ConfigError`, before any run starts. `describe_schema`
renders the same table as Markdown, so the documentation cannot drift from what is enforced. The
exact schema is the table in docs/CONFIG.md (generated from it).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.proposer import Hypothesis
from engine.schema import Field, Matches, NonEmpty, OneOf, PathText, Range
from engine.sections import (
    ARRAY_SECTIONS,
    ENV_KINDS,
    POLICY_KINDS,
    SCHEMA,
    SECTION_TYPES,
    BeliefsSection,
    DecisionSection,
    MemorySection,
    PolicySection,
    ProposerSection,
    RunnerSection,
    StudySection,
)
from engine.validate import (
    cross_field_problems,
    got,
    heading,
    read_patches,
    suggest,
    validate_hypotheses,
    validate_table,
)

__all__ = [
    "ConfigError",
    "StudyConfig",
    "StudySection",
    "BeliefsSection",
    "PolicySection",
    "DecisionSection",
    "MemorySection",
    "ProposerSection",
    "RunnerSection",
    "SCHEMA",
    "SECTION_TYPES",
    "ARRAY_SECTIONS",
    "ENV_KINDS",
    "POLICY_KINDS",
    "Field",
    "Matches",
    "NonEmpty",
    "OneOf",
    "PathText",
    "Range",
    "load_config",
    "parse_config",
    "config_changes",
    "stored_changes",
    "as_made",
    "config_record",
    "config_hash",
    "describe_schema",
    "render_reference",
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


@dataclass(frozen=True)
class StudyConfig:
    study: StudySection
    env: dict[str, Any]  # the validated [env] table: common keys plus those of its kind
    hypotheses: tuple[Hypothesis, ...]
    beliefs: BeliefsSection
    policy: PolicySection
    decision: DecisionSection
    memory: MemorySection
    proposer: ProposerSection
    runner: RunnerSection
    source_path: Path
    raw: dict[str, Any]  # the parsed document as written, for the ledger


def parse_config(
    data: dict, *, source: str = "<dict>", out_dir: str | None = None,
    patches: Mapping[str, str] | None = None,
) -> StudyConfig:
    """Validate a parsed config document; raise ConfigError listing every problem.

    `source` names the document in messages; its file stem is the default study name
    ("study" for the default "<dict>"), and its folder is where [[hypotheses]] patch paths
    start. `out_dir` overrides [study] out_dir (the CLI's --out). `patches` gives a diff's
    text by hypothesis name instead of its file (a stored study's, `parse_stored`).
    """
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the document: got {got(data)}, expected a table of sections"])
    problems: list[str] = []
    for section, value in data.items():
        if section not in SCHEMA:
            sections = ", ".join(map(heading, SCHEMA))
            problems.append(f"[{section}]: unknown section.{suggest(section, list(SCHEMA))} "
                            f"Sections: {sections}")
    tables: dict[str, dict[str, Any]] = {}
    for section, fields in SCHEMA.items():
        if section in ARRAY_SECTIONS:
            continue
        table = data.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"[{section}]: got {got(table)}, expected a table")
            continue
        kind = table.get("kind") if section == "env" else None
        env_kind = kind if kind in ENV_KINDS else None
        tables[section] = validate_table(
            f"[{section}]", table, fields, problems, env_kind=env_kind)
    hypotheses = validate_hypotheses(data.get("hypotheses", []), SCHEMA["hypotheses"], problems)
    read_patches(hypotheses, Path(source).parent if source != "<dict>" else Path.cwd(),
                 patches or {}, problems)
    problems += cross_field_problems(tables, hypotheses_given=bool(data.get("hypotheses")))
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
        hypotheses=tuple(Hypothesis(**h) for h in hypotheses),
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
    how it was spelled (raw), so the same study hashes the same from any directory; and how
    its runs are made ([runner]), so a study may resume on another fleet: its plans are in its
    ledger, whatever made their runs.
    """
    canonical = json.dumps(_identity(cfg), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def config_changes(before: StudyConfig, after: StudyConfig) -> list[str]:
    """The settings that `config_hash` sees differ, one "[section] key: old -> new" each (a
    hypothesis by its place: "[[hypotheses]] 2")."""
    old, new = _identity(before), _identity(after)
    changes = []
    for section in sorted(old.keys() | new.keys()):
        a, b = old.get(section), new.get(section)
        if section == "hypotheses":
            changes += [f"[[hypotheses]] {i + 1}: {x!r} -> {y!r}"
                        for i, (x, y) in enumerate(itertools.zip_longest(a, b)) if x != y]
            continue
        changes += [f"[{section}] {key}: {a.get(key)!r} -> {b.get(key)!r}"
                    for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]
    return changes


def stored_changes(record: dict, cfg: StudyConfig, patch_base: str = "") -> list[str]:
    """What makes the config record a study stored differ from `cfg` ([] for none), its file
    read again by this version (`as_made`): a study made before a setting was added has the
    same value on both sides, whatever hash was stored then; a file this version refuses is a
    change. `patch_base` is the hash of the code patches apply to (`config_record`): a study
    whose patches were checked against other code is changed too."""
    try:
        stored_cfg = as_made(parse_stored(record, str(cfg.source_path)), record)
    except ConfigError as exc:
        return ["its file is refused by this version: " + "; ".join(exc.problems)]
    changes = config_changes(stored_cfg, cfg)
    if record.get("patch_base", "") != patch_base and "patch_base" in record:
        changes.append("the trainer's mutable files (train/model.py, train/optim.py) changed: "
                       "the study's patches were checked against the code it began with")
    return changes


def parse_stored(record: dict, source: str) -> StudyConfig:
    """The config of a ledger's record, validated again: its hypotheses' patches are the diffs
    it stored, not what their files hold now (or wherever they are)."""
    patches = {h["name"]: h["patch"] for h in record.get("settings", {}).get("hypotheses", [])
               if h.get("patch")}
    return parse_config(record["config"], source=source, patches=patches)


# Settings that change the model, with the value a study made before they existed had.
MODEL_SETTINGS_ADDED = {("beliefs", "device_effects"): False}


def as_made(cfg: StudyConfig, record: dict) -> StudyConfig:
    """The config a resumed study keeps: a setting of MODEL_SETTINGS_ADDED that its file does
    not set takes the value its config record says it was made with (`settings`, written since
    they were added), else the value from before the setting existed; so a resume never
    changes a study's model by a new default."""
    settings = record.get("settings", {})
    for (section, key), before in MODEL_SETTINGS_ADDED.items():
        if key not in cfg.raw.get(section, {}):
            value = settings.get(section, {}).get(key, before)
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(
                getattr(cfg, section), **{key: value})})
    return cfg


def config_record(cfg: StudyConfig, patch_base: str = "") -> dict[str, Any]:
    """What a ledger keeps of a study's config: the file as written, its hash, every validated
    setting (defaults filled), which `as_made` reads on a resume, and, for an env that takes
    code patches, the hash of the code they apply to (`patch_base`)."""
    return {"config_hash": config_hash(cfg), "config": cfg.raw, "settings": _identity(cfg),
            **({"patch_base": patch_base} if patch_base else {})}


def _identity(cfg: StudyConfig) -> dict[str, Any]:
    """The validated settings that make a study what it is (config_hash)."""
    validated = {
        "env": cfg.env,
        "hypotheses": [dataclasses.asdict(h) for h in cfg.hypotheses],
        **{
            name: dataclasses.asdict(getattr(cfg, name))
            for name in SECTION_TYPES
            if name not in ("hypotheses", "runner")
        },
    }
    del validated["study"]["out_dir"]
    return validated


def describe_schema() -> str:
    """Markdown: one table per section with every key's type, default, allowed values and
    meaning."""
    out = []
    for section, fields in SCHEMA.items():
        has_kinds = any(f.kinds for f in fields.values())
        columns = [
            "key", *(["env kind"] if has_kinds else []), "type", "default", "allowed", "meaning",
        ]
        out += [
            f"### `{heading(section)}`", "", "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for key, field in fields.items():
            cells = [
                f"`{key}`",
                *([", ".join(field.kinds) if field.kinds else "all"] if has_kinds else []),
                field.type.noun,
                field.default_text(),
                field.allowed(),
                field.doc,
            ]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def render_reference() -> str:
    """docs/CONFIG.md: the key reference, generated so the docs cannot drift from the schema."""
    return ("# Config reference\n\nGenerated from the settings declared in `engine/sections.py` "
            "(and `engine.proposer.Hypothesis` for `[[hypotheses]]`) by "
            "`python -m engine.config > docs/CONFIG.md`; a test fails when it drifts.\n\n"
            + describe_schema())


if __name__ == "__main__":
    print(render_reference(), end="")
