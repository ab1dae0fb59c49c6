"""Transfer: a warm start from stored insights reaches the cold start's decision quality in
fewer runs (issue 5). Synthetic worlds with known effects and Gaussian noise; a simple paired
keep rule on `Beliefs.difference` stands in for the engine's loop."""

from dataclasses import dataclass

import numpy as np
import pytest

from memory import Ledger, priors_from_insights

beliefs = pytest.importorskip("beliefs")

N_HYPOTHESES = 8
CATEGORIES = ("architecture", "optimizer")
BASE_VALUE, NOISE_SD = 10.0, 1.0
BASE_RUNS, RUNS_PER_BATCH, MAX_BATCHES = 4, 2, 15
THRESHOLD = 0.95  # keep when P(effect < 0) >= 0.95, revert when <= 0.05
N_WORLDS = 5


@dataclass
class StudyResult:
    runs: int
    verdicts: dict[str, str]
    beliefs: object
    runs_per_hypothesis: dict[str, int]


def draw_world(rng):
    """True effects (metric units, lower is better): 40% improve, the rest hurt, |effect| in
    [0.4, 0.9] noise sd, so every hypothesis has one right verdict."""
    signs = np.where(rng.random(N_HYPOTHESES) < 0.4, -1.0, 1.0)
    sizes = rng.uniform(0.4, 0.9, N_HYPOTHESES) * NOISE_SD
    return {f"h{i}": float(s * m) for i, (s, m) in enumerate(zip(signs, sizes))}


def run_study(ledger, name, world, rng, effect_priors):
    """Base runs, then round-robin batches of candidate runs over undecided hypotheses, each
    judged against the base config until the keep rule decides it (or MAX_BATCHES: revert)."""
    hypotheses = [beliefs.Hypothesis(h, CATEGORIES[i % 2]) for i, h in enumerate(world)]
    model = beliefs.Beliefs(hypotheses, prior=beliefs.BeliefPrior(effect_priors=effect_priors))
    study = ledger.start_study(name, {"hypotheses": sorted(world)}, "world", 0)

    def run(step, slot, role, applied):
        value = BASE_VALUE + sum(world[h] for h in applied) + float(rng.normal(0.0, NOISE_SD))
        ledger.record_run(study, step, slot, role=role, hypotheses=applied,
                          config={h: True for h in applied}, seed=int(rng.integers(2**31)),
                          status="ok", metric=value)
        return beliefs.Observation(frozenset(applied), value)

    with ledger.transaction():
        model.update([run(0, slot, "base", []) for slot in range(BASE_RUNS)])
        ledger.record_step(study, 0, action={"kind": "base"}, appraisal={}, incumbent={})
    verdicts, batches, step = {}, dict.fromkeys(world, 0), 0
    while len(verdicts) < len(world):
        for h in [h for h in world if h not in verdicts]:
            step += 1
            with ledger.transaction():
                model.update([run(step, slot, "candidate", [h]) for slot in range(RUNS_PER_BATCH)])
                batches[h] += 1
                p_better = float(model.difference(frozenset([h]), frozenset()).cdf(0.0))
                verdict = ("keep" if p_better >= THRESHOLD else
                           "revert" if p_better <= 1 - THRESHOLD or batches[h] >= MAX_BATCHES
                           else "undecided")
                ledger.record_decision(study, step, h, verdict, p_better=p_better,
                                       n_runs=batches[h] * RUNS_PER_BATCH)
                ledger.record_step(study, step, action={"hypothesis": h}, appraisal={},
                                   incumbent={})
            if verdict != "undecided":
                verdicts[h] = verdict
    ledger.finish_study(study, "finished", "every hypothesis decided")
    return StudyResult(len(ledger.runs(study)), verdicts, model,
                       {h: n * RUNS_PER_BATCH for h, n in batches.items()})


def store_insights(ledger, result):
    """What the engine derives from a finished study's posterior: per-hypothesis effects, and
    dead ends for hypotheses reverted with high confidence."""
    for effect in result.beliefs.effects():
        dead = result.verdicts[effect.name] == "revert" and effect.lo > 0
        ledger.upsert_insight(
            env_fingerprint="world", kind="dead_end" if dead else "effect", subject=effect.name,
            statement=f"{effect.name}: {effect.mean:+.3f} ({effect.category})",
            mean=effect.mean, lo=effect.lo, hi=effect.hi,
            evidence=result.runs_per_hypothesis[effect.name], unit="loss")


def accuracy(world, verdicts):
    return np.mean([(verdicts[h] == "keep") == (effect < 0) for h, effect in world.items()])


def test_warm_start_needs_fewer_runs_for_the_same_decision_quality(tmp_path):
    cold_runs = warm_runs = 0
    cold_correct, warm_correct = [], []
    for world_seed in range(N_WORLDS):
        rng = np.random.default_rng([20260523, world_seed])
        world = draw_world(rng)
        with Ledger(tmp_path / f"world{world_seed}.db") as ledger:
            cold = run_study(ledger, "cold", world, rng, effect_priors={})
            store_insights(ledger, cold)
            t_now = ledger.experiment_time()
            recalled = ledger.recall_insights(env_fingerprint="world", t_now=t_now)
            priors = priors_from_insights(recalled, t_now=t_now, decay=0.5)
            assert set(priors) == set(world)
            warm = run_study(ledger, "warm", world, rng, effect_priors=priors)
        cold_runs += cold.runs
        warm_runs += warm.runs
        cold_correct.append(accuracy(world, cold.verdicts))
        warm_correct.append(accuracy(world, warm.verdicts))
    ratio = warm_runs / cold_runs
    print(f"\ntransfer over {N_WORLDS} worlds x {N_HYPOTHESES} hypotheses: cold {cold_runs} runs, "
          f"accuracy {np.mean(cold_correct):.3f}; warm {warm_runs} runs, accuracy "
          f"{np.mean(warm_correct):.3f}; warm/cold run ratio {ratio:.3f}")
    assert np.mean(warm_correct) >= np.mean(cold_correct)
    assert ratio <= 0.8
