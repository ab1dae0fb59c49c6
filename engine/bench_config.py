"""A bench file: its tables, checked, and each study's config built from them (engine/bench.py
runs them)."""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from engine.baselines import BASELINES
from engine.config import ConfigError, parse_config

BENCH_KEYS = {"name", "out_dir", "seeds", "first_seed", "budget_trials", "policies",
              "default_policy", "reeval_runs", "workers", "vary_world", "false_keep_target"}
WORLD_KEYS = {"name", "truth_table", "config"}  # a world's keys that are no study section


def load_bench(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), ["the bench file does not exist"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"invalid TOML: {exc}"]) from None
    bench = data.get("bench", {})
    unknown = set(data) - {"bench", "defaults", "worlds", "variants"} | (set(bench) - BENCH_KEYS)
    if unknown:
        raise ConfigError(
            str(path), [f"unknown keys {sorted(unknown)}; [bench] allows {sorted(BENCH_KEYS)}"])
    if not data.get("worlds"):
        raise ConfigError(str(path), ["at least one [[worlds]] table is required"])
    problems = [f"[variants.{name}] needs a [variants.{name}.policy] table with a kind"
                for name, variant in data.get("variants", {}).items()
                if not isinstance(variant, dict)
                or not isinstance(variant.get("policy"), dict) or "kind" not in variant["policy"]]
    if problems:
        raise ConfigError(str(path), problems)
    data["worlds"] = [with_study_config(world, path) for world in data["worlds"]]
    return data


def with_study_config(world: dict, bench_path: Path) -> dict:
    """A world with `config = "FILE.toml"` (a study config, beside the bench file) takes that
    study's sections, its budget included, under the world's own tables; the bench sets the
    study's name, folder and seed."""
    if "config" not in world:
        return world
    path = bench_path.parent / world["config"]
    try:
        study = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(bench_path), [f"world {world.get('name')!r}: config {path} "
                                            "does not exist"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"invalid TOML: {exc}"]) from None
    merged = dict(study)
    merged["study"] = {key: value for key, value in study.get("study", {}).items()
                       if key not in ("name", "out_dir", "seed")}
    for section, table in world.items():
        if isinstance(table, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **table}
        else:
            merged[section] = table
    return merged


def study_config(data: dict, world: dict, policy: str, seed: int, out_dir: Path, source: Path):
    """One study's validated config: defaults, then the world's overrides, then the policy
    variant's, then the bench's (a world's own `[worlds.study] budget_trials` beats the
    bench's)."""
    bench = data["bench"]
    raw = copy.deepcopy(data.get("defaults", {}))
    variant = data.get("variants", {}).get(policy, {})
    for overrides in (world, variant):
        for section, table in overrides.items():
            if isinstance(table, list):  # [[worlds.hypotheses]] replaces the list
                raw[section] = copy.deepcopy(table)
            elif section not in WORLD_KEYS:
                raw.setdefault(section, {}).update(copy.deepcopy(table))
    if bench.get("vary_world", True) and raw["env"].get("kind") == "synthetic":
        raw["env"]["world_seed"] = seed  # average over a family of worlds, not one draw
    budget = world.get("study", {}).get("budget_trials", bench["budget_trials"])
    raw.setdefault("study", {}).update(
        name=f"{world['name']}-{policy}-{seed}", seed=seed, budget_trials=budget)
    # A baseline from outside the engine has no engine policy; its config names one for the record.
    if not variant:
        raw.setdefault("policy", {})["kind"] = "random" if policy in BASELINES else policy
    raw.setdefault("beliefs", {}).setdefault("fit_pymc", False)
    folder = out_dir / "studies" / world["name"] / policy / f"seed{seed}"
    return parse_config(raw, source=str(source), out_dir=str(folder))


def policy_kind(data: dict, policy: str) -> str:
    """The policy a bench entry runs: a variant's [variants.NAME.policy] kind, else the name."""
    return data.get("variants", {}).get(policy, {}).get("policy", {}).get("kind", policy)
