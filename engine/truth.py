"""What a benchmark judges a study by: the truth of a configuration's value, and whether a change
brings no gain (exact, from a truth table, or re-measured; engine/bench.py scores with it)."""
from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engine.config import ConfigError

REEVAL_STREAM = 99991  # fresh re-measurement seeds: default_rng([study seed, REEVAL_STREAM])


def gains(study, truth: Truth, applied: frozenset[str]) -> tuple[float, float | None]:
    """(the true gain of `applied` over the base, the best reachable gain where it is known),
    metric units, positive = better."""
    base_value = truth(frozenset())
    best = getattr(study.env, "best_reachable", None)  # synthetic worlds know their optimum
    best_gain = study.sign * (base_value - best().value) if best else None
    return study.sign * (base_value - truth(applied)), best_gain


@functools.lru_cache(maxsize=None)
def _read_table(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), ["the truth table does not exist; "
                                      "write it with python experiments/truth_gpt.py"]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), [f"not a truth table (invalid JSON: {exc})"]) from None


# [env] keys that limit or check a run rather than define what it measures: a table measured
# under other limits, or without a guard, holds.
UNMEASURED_KEYS = frozenset({"timeout_s", "memory_limit_mb", "guard_command"})


def truth_table(world: dict, source: Path, env: dict, hypotheses: Iterable) -> dict | None:
    """The world's truth table (None without one), refused unless its runs were made with the
    study's [env] (all but UNMEASURED_KEYS), in fixed steps where the env is the trainer, and it
    holds every hypothesis with the same change."""
    if "truth_table" not in world:
        return None
    path = source.parent / world["truth_table"]
    table = _read_table(path)
    env = json.loads(json.dumps(env, default=str))  # as the table stored it
    problems = [f"it was measured with [env] {key} = {table['env'].get(key)!r}, the world "
                f"{world['name']!r} has {env.get(key)!r}"
                for key in sorted((set(table["env"]) | set(env)) - UNMEASURED_KEYS)
                if table["env"].get(key) != env.get(key)]
    if env.get("kind") == "gpt" and not env.get("steps"):
        problems.append(f"world {world['name']!r} is timed: a truth table needs fixed-step runs")
    for h in hypotheses:
        row = table["hypotheses"].get(h.name)
        if row is None:
            problems.append(f"it has no row for hypothesis {h.name!r}")
        elif row["change"] != h.change:
            problems.append(f"its {h.name!r} is the change {row['change']}, "
                            f"the world's is {h.change}")
    if problems:
        raise ConfigError(str(path), problems)
    return table


class Truth:
    """The noise-free metric of a set of applied hypotheses, cached per set, and whether a
    change brings no gain. By source:
    - "truth": exact, where the env knows it;
    - "table": the mean over the first `reeval_runs` seeds of a truth table (the base and single
      changes there are the table's own runs where the trainer's code is the table's), and a
      change's gain is the table's label;
    - "reeval": the mean of `reeval_runs` fresh runs (seeds no study used)."""

    def __init__(self, study, reeval_runs: int, seed: int, table: dict | None = None):
        self.study, self.reeval_runs, self.seed, self.table = study, reeval_runs, seed, table
        self.source = ("table" if table is not None else "truth" if study.env.knows_truth()
                       else "reeval")
        self.cache: dict[frozenset[str], float] = {}

    def __call__(self, applied: frozenset[str]) -> float:
        if applied not in self.cache:
            self.cache[applied] = self._measure(applied)
        return self.cache[applied]

    def no_gain(self, applied: frozenset[str], members: frozenset[str]) -> bool | None:
        """Whether adding `members` to `applied` brings no true gain; None where the truth does
        not say (a table's "unclear" change)."""
        if self.source == "table":
            rows = [self.table["hypotheses"][name] for name in members]
            if any(row["label"] == "unclear" for row in rows):
                return None
            return self.study.sign * sum(row["effect"] for row in rows) >= 0
        return self.study.sign * (self(applied | members) - self(applied)) >= 0

    def _measure(self, applied: frozenset[str]) -> float:
        config = self.study.config_for(applied)
        if self.source == "truth":
            return self.study.env.truth(config)
        if self.source == "table":
            seeds = self.table["seeds"][: self.reeval_runs]
        else:
            seeds = np.random.default_rng([self.seed, REEVAL_STREAM]).integers(
                2**31 - 1, size=self.reeval_runs)
        values = [self._run(applied, config, int(s)) for s in seeds]
        values = [v for v in values if v is not None and np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    def _run(self, applied: frozenset[str], config: dict, seed: int) -> float | None:
        """One run's metric; a table's run where it has this one (fixed-step runs with the same
        trainer code are deterministic per seed), else the env's."""
        if self.source == "table" and len(applied) <= 1 \
                and self.table["code_hash"] == getattr(self.study.env, "code_hash", None):
            name = next(iter(applied), "base")
            known = self.table["runs"].get(name, {}).get(str(seed))
            if known is not None:
                return known
        return self.study.env.run(config, seed).metric
