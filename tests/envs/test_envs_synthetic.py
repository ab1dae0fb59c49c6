"""Synthetic worlds: reproducible truth, the noise and crash rate asked for, interactions,
optimum."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from envs import SyntheticEnv, make_env


def config_of(*names: str) -> dict:
    return {name: True for name in names}


def sample(env: SyntheticEnv, config: dict, n_runs: int) -> np.ndarray:
    return np.array([env.run(config, seed).metric for seed in range(n_runs)], dtype=float)


def test_world_is_reproducible_from_world_seed_and_differs_across_seeds():
    first, again, other = (SyntheticEnv(world_seed=s, n_interactions=4) for s in (5, 5, 6))
    assert first.true_effects() == again.true_effects()
    assert first.interactions() == again.interactions()
    assert first.hypotheses() == again.hypotheses()
    assert first.fingerprint() == again.fingerprint()
    assert first.true_effects() != other.true_effects()
    assert first.fingerprint() != other.fingerprint()


def test_same_config_and_seed_give_the_same_outcome():
    env = SyntheticEnv(world_seed=1, crash_prob=0.3)
    config = config_of("h03", "h07")
    assert [env.run(config, s) for s in range(20)] == [env.run(dict(config), s) for s in range(20)]
    assert len({env.run(config, s).metric for s in range(20)}) > 10


@pytest.mark.parametrize("noise, noise_df", [("gaussian", 3.0), ("student_t", 5.0)])
def test_measured_noise_sd_and_mean_are_what_was_asked(noise, noise_df):
    env = SyntheticEnv(world_seed=2, noise_sd=0.7, noise=noise, noise_df=noise_df)
    config = config_of("h01")
    values = sample(env, config, 8000)
    # Relative standard error of a sample sd is about 1.1% (gaussian) and 1.6% (t5) here.
    assert values.std(ddof=1) == pytest.approx(0.7, rel=0.08)
    assert abs(values.mean() - env.truth(config)) < 5 * 0.7 / np.sqrt(values.size)


def test_student_t_noise_has_heavy_tails():
    values = {kind: sample(SyntheticEnv(world_seed=3, noise=kind, noise_df=5.0), {}, 8000)
              for kind in ("gaussian", "student_t")}
    z = {kind: (v - v.mean()) / v.std() for kind, v in values.items()}
    excess_kurtosis = {kind: float(np.mean(v ** 4) - 3) for kind, v in z.items()}
    assert abs(excess_kurtosis["gaussian"]) < 0.4  # its standard error is about 0.055
    assert excess_kurtosis["student_t"] > 1.5  # true value 6


def test_heteroscedastic_noise_grows_with_applied_hypotheses():
    env = SyntheticEnv(world_seed=4, noise_sd=0.5, heteroscedastic=0.5)
    three = config_of("h01", "h02", "h03")
    assert env.noise_sd_of(frozenset(three)) == pytest.approx(0.5 * 2.5)
    assert sample(env, three, 6000).std(ddof=1) == pytest.approx(1.25, rel=0.06)
    assert sample(env, {}, 6000).std(ddof=1) == pytest.approx(0.5, rel=0.06)


def test_crash_rate_matches_crash_prob_within_binomial_error():
    env = SyntheticEnv(world_seed=0, crash_prob=0.2)
    n_runs = 4000
    outcomes = [env.run(config_of("h02"), seed) for seed in range(n_runs)]
    crashes = sum(o.status == "crash" for o in outcomes)
    assert abs(crashes - 0.2 * n_runs) < 4 * np.sqrt(n_runs * 0.2 * 0.8)
    assert all(o.metric is None for o in outcomes if o.status == "crash")


def test_interactions_change_truth_only_when_both_are_applied():
    env = SyntheticEnv(world_seed=7, n_hypotheses=12, n_interactions=5, interaction_size=2.0)
    pairs = {frozenset((i.first, i.second)): i.effect for i in env.interactions()}
    assert len(pairs) == 5 and all(1.0 <= abs(e) <= 3.0 for e in pairs.values())
    for a, b in itertools.combinations(env.names, 2):
        # truth(a,b) - truth(a) - truth(b) + truth(base): zero unless (a, b) interact.
        joint = (env.truth(config_of(a, b)) - env.truth(config_of(a)) - env.truth(config_of(b))
                 + env.truth({}))
        assert joint == pytest.approx(pairs.get(frozenset((a, b)), 0.0), abs=1e-12)


def test_main_effects_are_mostly_null_or_harmful_with_the_asked_share_improving():
    env = SyntheticEnv(world_seed=9, n_hypotheses=50, p_improve=0.2, effect_size=0.3)
    effects = env.true_effects()
    improving = env.improving_hypotheses()
    assert len(improving) == 10
    assert all(effects[name] < 0 for name in improving)
    assert all(effects[name] >= 0 for name in set(effects) - improving)
    assert all(0.15 <= -effects[name] <= 0.45 for name in improving)
    assert any(effects[name] == 0.0 for name in effects)  # exact nulls exist
    for name, effect in effects.items():
        assert env.truth(config_of(name)) - env.truth({}) == pytest.approx(effect)


def test_dense_worlds_draw_every_effect_from_a_gaussian_with_the_asked_nulls():
    """effects = "dense": harm ~ N(0, effect_size^2) per hypothesis, n_null exactly 0. Pooled over
    200 worlds of 12, the non-null effects' sd and mean match within sampling error."""
    draws = []
    for seed in range(200):
        env = SyntheticEnv(world_seed=seed, n_hypotheses=12, effects="dense", effect_size=0.35,
                           n_null=2)
        effects = np.array(list(env.true_effects().values()))
        assert np.sum(effects == 0.0) == 2
        draws.extend(effects[effects != 0.0])
        assert env.truth(config_of("h00")) - env.truth({}) == pytest.approx(effects[0])
    draws = np.array(draws)  # 2000 draws: sd's standard error ~ 0.35 / sqrt(4000)
    assert np.std(draws) == pytest.approx(0.35, abs=4 * 0.35 / np.sqrt(2 * len(draws)))
    assert abs(np.mean(draws)) < 4 * 0.35 / np.sqrt(len(draws))
    sparse = SyntheticEnv(world_seed=3, n_hypotheses=12)
    assert sparse.fingerprint() == SyntheticEnv(world_seed=3, n_hypotheses=12,
                                                n_null=5).fingerprint()  # only dense reads it


def test_higher_is_better_worlds_flip_the_sign_of_every_effect():
    lower = SyntheticEnv(world_seed=11, n_interactions=3)
    higher = SyntheticEnv(world_seed=11, n_interactions=3, direction="higher")
    assert higher.improving_hypotheses() == lower.improving_hypotheses()
    assert all(higher.true_effects()[n] == -e for n, e in lower.true_effects().items())
    best = higher.best_reachable()
    assert best.value >= higher.truth({}) and best.applied == lower.best_reachable().applied


def test_best_reachable_is_the_exact_optimum_over_all_subsets():
    env = SyntheticEnv(world_seed=12, n_hypotheses=9, n_interactions=6, interaction_size=1.5)
    best = env.best_reachable()
    brute = min(env.truth(config_of(*subset))
                for k in range(10) for subset in itertools.combinations(env.names, k))
    assert best.exact
    assert best.value == pytest.approx(brute)
    assert env.truth(config_of(*best.applied)) == pytest.approx(best.value)


def test_best_reachable_falls_back_to_a_local_optimum_when_too_many_are_coupled():
    env = SyntheticEnv(world_seed=13, n_hypotheses=40, n_interactions=30)
    best = env.best_reachable()
    assert not best.exact
    assert best.value < env.truth({})
    for name in env.names:  # no single add/remove improves on it
        flipped = best.applied ^ {name}
        assert env.truth(config_of(*flipped)) >= best.value - 1e-12


def test_hypotheses_runs_and_bad_configs():
    env = SyntheticEnv(world_seed=0, n_hypotheses=12, categories=["a", "b", "c"],
                       seconds_per_run=42.0)
    hypotheses = env.hypotheses()
    assert [h["name"] for h in hypotheses] == env.names and len(env.names) == 12
    assert all(h["change"] == {h["name"]: True} for h in hypotheses)
    counts = {c: sum(h["category"] == c for h in hypotheses) for c in "abc"}
    assert counts == {"a": 4, "b": 4, "c": 4}
    started = time.monotonic()
    outcome = env.run(config_of("h01"), seed=0)
    assert outcome.seconds == 42.0 and time.monotonic() - started < 1.0
    assert env.truth({"h01": False}) == env.truth({})
    with pytest.raises(ValueError, match="nope"):
        env.run({"nope": True}, seed=0)
    with pytest.raises(ValueError, match="true/false"):
        env.run({"h01": 1.5}, seed=0)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"n_hypotheses": 4, "n_interactions": 7}, "n_interactions"),
    ({"noise": "student_t", "noise_df": 2.0}, "noise_df"),
    ({"noise": "cauchy"}, "noise"),
    ({"crash_prob": 1.0}, "crash_prob"),
    ({"categories": []}, "categories"),
    ({"direction": "up"}, "direction"),
    ({"seed_sd": -1.0}, "seed_sd"),
    ({"seed_sd": 1.0, "seed_share": {"nope": 0.5}}, "not categories"),
    ({"seed_sd": 1.0, "seed_share": {"data": 1.5}}, r"in \[0, 1\]"),
])
def test_impossible_worlds_are_rejected(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        SyntheticEnv(**kwargs)


def test_make_env_builds_a_synthetic_world_and_ignores_other_kinds_keys(tmp_path):
    section = {"kind": "synthetic", "world_seed": 3, "n_hypotheses": 6, "metric": "loss",
               "direction": "lower", "timeout_s": 600.0, "backend": "auto", "base": {}}
    env = make_env(section, base_dir=tmp_path)
    assert isinstance(env, SyntheticEnv)
    assert env.fingerprint() == SyntheticEnv(world_seed=3, n_hypotheses=6).fingerprint()


def test_a_change_that_does_nothing_leaves_the_truth_exactly_unchanged():
    """The bench counts a decision on a change with truth(S + h) - truth(S) >= 0 as one on a
    null: that difference must be exactly 0.0 for a null, whatever order S's names come in."""
    env = SyntheticEnv(world_seed=5, n_hypotheses=12, effect_size=1.0)
    nulls = [n for n in env.names if env.truth({n: True}) == env.truth({})]
    assert nulls, "the world has changes that do nothing"
    rng = np.random.default_rng(0)
    for _ in range(300):
        subset = list(rng.permutation(env.names)[: rng.integers(1, 12)])
        for null in nulls:
            config = dict.fromkeys(subset, True)
            assert env.truth({**config, null: True}) == env.truth(config)


def test_seed_luck_is_shared_across_configs_as_far_as_each_category_keeps_it():
    """Over 4000 seeds: a config's runs have sd sqrt(seed_sd^2 + noise_sd^2); a change of a
    category that keeps a share rho of the luck correlates with the base at one seed by
    sqrt(rho) seed_sd^2 / (seed_sd^2 + noise_sd^2), so by 0.8 (rho 1), 0.4 (rho 1/4), 0 (rho 0)."""
    shares = {"architecture": 0.0, "optimizer": 1.0, "schedule": 0.25}
    env = SyntheticEnv(world_seed=5, n_hypotheses=8, noise_sd=0.5, seed_sd=1.0,
                       seed_share=shares, categories=["architecture", "optimizer", "schedule"])
    base = sample(env, {}, 4000)
    assert base.std(ddof=1) == pytest.approx(np.sqrt(1.25), rel=0.05)
    for category, share in shares.items():
        name = next(n for n, g in env.category_of.items() if g == category)
        changed = sample(env, config_of(name), 4000)
        expected = np.sqrt(share) / 1.25
        assert np.corrcoef(base, changed)[0, 1] == pytest.approx(expected, abs=0.05), category
        assert changed.std(ddof=1) == pytest.approx(np.sqrt(1.25), rel=0.05)
    # a world without seed luck keeps the fingerprint it had before the setting existed
    assert "seed_sd" not in SyntheticEnv(world_seed=5).world
