"""The `synthetic` env: a family of worlds whose truth is known, for testing and benchmarks.

A world is drawn from world_seed alone. Effects are first drawn in "harm" units (positive =
worse, whatever the direction) and then signed into metric units, so that an improving
hypothesis lowers the metric when direction = "lower" and raises it when direction = "higher".

Effects come in one of two families (`effects`).

`sparse` (the default), where few changes help:
- Hypotheses are spread evenly over the categories. Each category has a mean m_g ~ N(0, (es/2)^2).
- round(p_improve * n) hypotheses truly improve, chosen with weight exp(-2 m_g / es), so that real
  improvements cluster in the categories that help on average. Their harm is -es * U(0.5, 1.5).
- Every other hypothesis has harm max(0, es/4 + m_g + d_j), d_j ~ N(0, (es/2)^2): exactly null
  (about a third of them) or harmful; it never improves.

`dense`, the regime of real tuning, where most changes do something small: every harm is drawn
from N(0, es^2), then n_null hypotheses chosen uniformly do exactly nothing (p_improve unused).

In both:
- n_interactions pairs, uniform over all pairs, add +-interaction_size * U(0.5, 1.5) when both
  hypotheses of the pair are applied.
- A run of a config with k applied hypotheses draws crash with probability crash_prob, else
  truth + sd * z with sd = noise_sd * (1 + heteroscedastic * k) and z standard normal or a
  Student-t rescaled to unit variance, so noise_sd is the run-to-run sd in both cases.
- Seed luck (`seed_sd` > 0): a run at seed s also gets the seed's luck, L = seed_sd * z_s,
  and each applied hypothesis j (in index order) keeps a share rho_g of it and draws the rest
  anew, L <- sqrt(rho_g) L + sqrt(1 - rho_g) seed_sd * w_sj, so every config's luck has sd
  seed_sd and one change's run correlates with the base's at the same seed by sqrt(rho_g).
  rho_g is `seed_share` of the hypothesis's category (1, all kept, for a category not named):
  like a learning-rate change, which keeps the seed's initialisation and data order, against an
  architecture change, which draws new ones.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np

from envs.base import (
    Direction,
    Env,
    Outcome,
    check_direction,
    hash_files,
    register_env,
    stable_hash,
)

# Exhaustive search over the hypotheses that take part in interactions up to this many
# (2^16 subsets); above it, best_reachable uses a local search over single flips.
MAX_EXACT_COUPLED = 16
LUCK_STREAM = 11  # a seed's luck comes from default_rng([world_seed, seed, LUCK_STREAM, ...])


@dataclass(frozen=True)
class Interaction:
    first: str
    second: str
    effect: float  # metric units, added to truth when both are applied


@dataclass(frozen=True)
class BestReachable:
    """The best true mean over subsets of hypotheses, and one subset reaching it."""

    value: float  # metric units
    applied: frozenset[str]
    exact: bool  # False: found by local search, a lower bound on the reachable gain


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@register_env
class SyntheticEnv(Env):
    """A world with known truth; see the module docstring for how it is drawn."""

    kind: ClassVar[str] = "synthetic"
    section_keys: ClassVar[frozenset[str]] = frozenset({
        "world_seed", "n_hypotheses", "categories", "p_improve", "effect_size", "noise_sd", "noise",
        "noise_df", "heteroscedastic", "n_interactions", "interaction_size", "crash_prob",
        "effects", "n_null", "base_value", "seconds_per_run", "metric", "direction",
        "timeout_s", "seed_sd", "seed_share",
    })

    def __init__(
        self,
        *,
        world_seed: int = 0,
        n_hypotheses: int = 20,
        categories: Sequence[str] = ("architecture", "optimizer", "schedule", "data"),
        p_improve: float = 0.2,
        effect_size: float = 1.0,
        noise_sd: float = 1.0,
        noise: Literal["gaussian", "student_t"] = "gaussian",
        noise_df: float = 3.0,
        heteroscedastic: float = 0.0,
        n_interactions: int = 0,
        interaction_size: float = 1.0,
        crash_prob: float = 0.0,
        effects: Literal["sparse", "dense"] = "sparse",
        n_null: int = 2,
        base_value: float = 10.0,
        seconds_per_run: float = 1.0,
        metric: str = "loss",
        direction: Direction = "lower",
        timeout_s: float = 600.0,  # accepted for a uniform [env] table; nothing here can hang
        seed_sd: float = 0.0,
        seed_share: Mapping[str, float] = MappingProxyType({}),
    ):
        check_direction(direction)
        n_pairs = n_hypotheses * (n_hypotheses - 1) // 2
        _require(world_seed >= 0, f"[env] world_seed = {world_seed!r} must be >= 0")
        _require(n_hypotheses >= 1, f"[env] n_hypotheses = {n_hypotheses!r} must be >= 1")
        _require(len(categories) >= 1, f"[env] categories = {categories!r} must not be empty")
        _require(0.0 <= p_improve <= 1.0, f"[env] p_improve = {p_improve!r} must be in [0, 1]")
        _require(effect_size > 0, f"[env] effect_size = {effect_size!r} must be > 0")
        _require(noise_sd > 0, f"[env] noise_sd = {noise_sd!r} must be > 0")
        _require(noise in ("gaussian", "student_t"),
                 f"[env] noise = {noise!r} is not 'gaussian' or 'student_t'")
        _require(noise != "student_t" or noise_df > 2,
                 f"[env] noise_df = {noise_df!r} must be > 2 for student_t noise (a finite sd)")
        _require(heteroscedastic >= 0, f"[env] heteroscedastic = {heteroscedastic!r} must be >= 0")
        _require(0 <= n_interactions <= n_pairs,
                 f"[env] n_interactions = {n_interactions!r} must be between 0 and {n_pairs}, "
                 f"the number of pairs of {n_hypotheses} hypotheses")
        _require(interaction_size >= 0,
                 f"[env] interaction_size = {interaction_size!r} must be >= 0")
        _require(0.0 <= crash_prob < 1.0, f"[env] crash_prob = {crash_prob!r} must be in [0, 1)")
        _require(effects in ("sparse", "dense"),
                 f"[env] effects = {effects!r} is not 'sparse' or 'dense'")
        _require(0 <= n_null <= n_hypotheses,
                 f"[env] n_null = {n_null!r} must be between 0 and n_hypotheses")
        _require(seconds_per_run > 0, f"[env] seconds_per_run = {seconds_per_run!r} must be > 0")
        _require(seed_sd >= 0, f"[env] seed_sd = {seed_sd!r} must be >= 0")
        seed_share = dict(seed_share)
        unknown = sorted(set(seed_share) - set(categories))
        _require(not unknown, f"[env] seed_share names {unknown}, which are not categories "
                              f"(categories: {list(categories)})")
        bad = {k: v for k, v in seed_share.items()
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1}
        _require(not bad, f"[env] seed_share values must be numbers in [0, 1], got {bad}")

        self.world = {
            "world_seed": int(world_seed), "n_hypotheses": int(n_hypotheses),
            "categories": list(categories), "p_improve": float(p_improve),
            "effect_size": float(effect_size), "noise_sd": float(noise_sd), "noise": noise,
            "noise_df": float(noise_df), "heteroscedastic": float(heteroscedastic),
            "n_interactions": int(n_interactions), "interaction_size": float(interaction_size),
            "crash_prob": float(crash_prob), "base_value": float(base_value),
            **({"effects": effects, "n_null": int(n_null)} if effects == "dense" else {}),
            "seconds_per_run": float(seconds_per_run),
            # only when set, so that the worlds without seed luck keep their fingerprints
            **({"seed_sd": float(seed_sd),
                "seed_share": {g: float(seed_share.get(g, 1.0)) for g in categories}}
               if seed_sd > 0 else {}),
        }
        self.metric_name = metric
        self.direction = direction
        self.backend = "synthetic"
        self.code_hash = hash_files([Path(__file__)], Path(__file__).parent)
        self.eval_hash = None

        rng = np.random.default_rng(world_seed)
        width = len(str(n_hypotheses - 1))
        self.names: list[str] = [f"h{index:0{width}d}" for index in range(n_hypotheses)]
        self._index = {name: index for index, name in enumerate(self.names)}
        category_of = rng.permutation(np.arange(n_hypotheses) % len(categories))
        self.category_of: dict[str, str] = {n: categories[c]
                                            for n, c in zip(self.names, category_of)}
        self._harm = (_draw_dense_harm(rng, n_hypotheses, n_null, effect_size)
                      if effects == "dense"
                      else _draw_harm(rng, category_of, len(categories), p_improve, effect_size))
        self._pairs, self._pair_harm = _draw_interactions(rng, n_hypotheses, n_interactions,
                                                          interaction_size)
        # Harm is positive = worse; metric units flip it when a higher metric is better.
        self._sign = 1.0 if direction == "lower" else -1.0

    # -- the world's truth ---------------------------------------------------------------------

    def true_effects(self) -> dict[str, float]:
        """Each hypothesis's main effect on the true mean, metric units."""
        return {name: float(self._sign * h) for name, h in zip(self.names, self._harm)}

    def interactions(self) -> list[Interaction]:
        return [Interaction(self.names[a], self.names[b], float(self._sign * h))
                for (a, b), h in zip(self._pairs, self._pair_harm)]

    def improving_hypotheses(self) -> frozenset[str]:
        """Hypotheses whose main effect truly improves the metric (in its direction)."""
        return frozenset(name for name, h in zip(self.names, self._harm) if h < 0)

    def truth(self, config: dict) -> float:
        return self._truth_of(self._applied(config))

    def knows_truth(self) -> bool:
        return True

    def best_reachable(self) -> BestReachable:
        """The best true mean over all subsets of hypotheses (exact when feasible).

        Hypotheses in no interaction are applied exactly when they improve. Those that take part
        in interactions are searched exhaustively when there are at most MAX_EXACT_COUPLED of
        them, else by steepest descent over single add/remove flips from the empty set until no
        flip helps (exact=False: the value is then a lower bound on the reachable gain).
        """
        coupled_set = {index for pair in self._pairs for index in pair}
        coupled = sorted(coupled_set)
        independent = [i for i in range(len(self.names))
                       if i not in coupled_set and self._harm[i] < 0]
        if len(coupled) <= MAX_EXACT_COUPLED:
            chosen, exact = self._best_subset_exhaustive(coupled), True
        else:
            chosen, exact = self._best_subset_local_search(coupled), False
        applied = frozenset(self.names[i] for i in [*independent, *chosen])
        return BestReachable(self._truth_of(applied), applied, exact)

    # -- runs ----------------------------------------------------------------------------------

    def run(self, config: dict, seed: int) -> Outcome:
        """One noisy run; the same (config, seed) always gives the same outcome."""
        _require(seed >= 0, f"seed = {seed!r} must be >= 0")
        applied = self._applied(config)
        config_key = hashlib.sha256(json.dumps(sorted(applied)).encode()).hexdigest()
        rng = np.random.default_rng([self.world["world_seed"], seed, int(config_key, 16)])
        seconds = self.world["seconds_per_run"]
        crashed = rng.random() < self.world["crash_prob"]
        if crashed:
            return Outcome(None, "crash", seconds, None, {"reason": "simulated crash"})
        sd = self.noise_sd_of(applied)
        return Outcome(self._truth_of(applied) + self.luck(applied, seed)
                       + sd * self._standard_noise(rng), "ok", seconds)

    def luck(self, applied: frozenset[str], seed: int) -> float:
        """The seed's luck as a run of `applied` keeps it (module docstring), metric units."""
        seed_sd = self.world.get("seed_sd", 0.0)
        if seed_sd == 0:
            return 0.0
        luck = seed_sd * np.random.default_rng([self.world["world_seed"], seed, LUCK_STREAM]) \
            .standard_normal()
        for index in sorted(self._index[name] for name in applied):
            share = self.world["seed_share"][self.category_of[self.names[index]]]
            fresh = np.random.default_rng([self.world["world_seed"], seed, LUCK_STREAM, index])
            luck = (math.sqrt(share) * luck
                    + math.sqrt(1 - share) * seed_sd * fresh.standard_normal())
        return float(luck)

    def noise_sd_of(self, applied: frozenset[str]) -> float:
        """The run-to-run sd of a config with these hypotheses applied, metric units."""
        return self.world["noise_sd"] * (1.0 + self.world["heteroscedastic"] * len(applied))

    def hypotheses(self) -> list[dict]:
        return [{"name": name, "category": self.category_of[name], "change": {name: True},
                 "description": f"synthetic change {name} in category {self.category_of[name]}"}
                for name in self.names]

    def change_problem(self, change: Mapping[str, Any]) -> str | None:
        """A key naming no hypothesis of the world, or a value that is not true/false."""
        try:
            self._applied(dict(change))
        except ValueError as exc:
            return str(exc)
        return None

    def mutable_knobs(self) -> tuple[str, ...]:
        return tuple(self._index)

    def fingerprint(self) -> str:
        return stable_hash({"kind": self.kind, **self.world,
                            "metric": self.metric_name, "direction": self.direction})

    # -- helpers -------------------------------------------------------------------------------

    def _applied(self, config: dict) -> frozenset[str]:
        unknown = sorted(set(config) - set(self._index))
        _require(not unknown, f"config keys {unknown} name no hypothesis of this synthetic world")
        not_bool = {k: v for k, v in config.items() if not isinstance(v, (bool, np.bool_))}
        _require(not not_bool, f"synthetic config values must be true/false, got {not_bool}")
        return frozenset(name for name, applied in config.items() if applied)

    def _truth_of(self, applied: frozenset[str]) -> float:
        # summed in index order: a set's order follows how it was built, and a float sum's
        # rounding follows its order, so a change that does nothing must not move the total
        indices = sorted(self._index[name] for name in applied)
        harm = float(sum(self._harm[i] for i in indices))
        harm += float(sum(h for (a, b), h in zip(self._pairs, self._pair_harm)
                          if a in indices and b in indices))
        return self.world["base_value"] + self._sign * harm

    def _standard_noise(self, rng: np.random.Generator) -> float:
        if self.world["noise"] == "gaussian":
            return float(rng.standard_normal())
        df = self.world["noise_df"]
        return float(rng.standard_t(df) * np.sqrt((df - 2.0) / df))  # unit variance

    def _harm_of_subsets(self, coupled: list[int], masks: np.ndarray) -> np.ndarray:
        """Total harm of each row of masks (rows: subsets of coupled, as 0/1 columns)."""
        position = {index: column for column, index in enumerate(coupled)}
        harm = masks @ self._harm[coupled]
        for (a, b), h in zip(self._pairs, self._pair_harm):
            harm = harm + h * masks[:, position[a]] * masks[:, position[b]]
        return harm

    def _best_subset_exhaustive(self, coupled: list[int]) -> list[int]:
        n_subsets = 1 << len(coupled)
        masks = ((np.arange(n_subsets)[:, None] >> np.arange(len(coupled))) & 1).astype(float)
        best = masks[int(np.argmin(self._harm_of_subsets(coupled, masks)))]
        return [index for index, bit in zip(coupled, best) if bit]

    def _best_subset_local_search(self, coupled: list[int]) -> list[int]:
        mask = np.zeros(len(coupled))
        while True:
            # All single flips of the current subset; take the best while it lowers harm.
            flips = np.abs(mask[None, :] - np.eye(len(coupled)))
            harm = self._harm_of_subsets(coupled, flips)
            current = self._harm_of_subsets(coupled, mask[None, :])[0]
            if harm.min() >= current:
                return [index for index, bit in zip(coupled, mask) if bit]
            mask = flips[int(np.argmin(harm))]


def _draw_harm(rng: np.random.Generator, category_of: np.ndarray, n_categories: int,
               p_improve: float, effect_size: float) -> np.ndarray:
    """Main effects in harm units (positive = worse); see the module docstring."""
    n = category_of.size
    # The mean of each hypothesis's category, per hypothesis.
    category_mean = rng.normal(0.0, 0.5 * effect_size, size=n_categories)[category_of]
    deviation = rng.normal(0.0, 0.5 * effect_size, size=n)
    harm = np.maximum(0.0, 0.25 * effect_size + category_mean + deviation)
    n_improve = int(round(p_improve * n))
    weights = np.exp(-2.0 * category_mean / effect_size)
    improving = rng.choice(n, size=n_improve, replace=False, p=weights / weights.sum())
    harm[improving] = -effect_size * rng.uniform(0.5, 1.5, size=n_improve)
    return harm


def _draw_dense_harm(rng: np.random.Generator, n: int, n_null: int,
                     effect_size: float) -> np.ndarray:
    """Main effects in harm units: N(0, effect_size^2) each, n_null of them set to exactly 0."""
    harm = rng.normal(0.0, effect_size, size=n)
    harm[rng.choice(n, size=n_null, replace=False)] = 0.0
    return harm


def _draw_interactions(rng: np.random.Generator, n: int, n_interactions: int,
                       interaction_size: float) -> tuple[list[tuple[int, int]], np.ndarray]:
    """n_interactions distinct pairs, uniform over all pairs, each with a signed harm."""
    if n_interactions == 0:
        return [], np.zeros(0)
    first, second = np.triu_indices(n, k=1)
    chosen = rng.choice(first.size, size=n_interactions, replace=False)
    pairs = [(int(first[k]), int(second[k])) for k in chosen]
    signs = rng.choice([-1.0, 1.0], size=n_interactions)
    return pairs, interaction_size * signs * rng.uniform(0.5, 1.5, size=n_interactions)
