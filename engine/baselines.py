"""Baselines from outside the engine, for the benchmark: Optuna's samplers on the same envs and
budgets, driven through ask/tell.

A trial is a subset of the study's hypotheses (one true/false parameter each, in declaration
order) and its value is one run of that configuration on a fresh seed; a run that fails is a
failed trial. After `budget_trials` trials the final configuration is the best trial, the way
Optuna users take it. These samplers see only what a run reports, as the ratchet does: no
replicates, no posterior, no claim about their own error. Optuna is an optional extra
(pip install -e '.[bench]').
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

SEED_STREAM = 13  # the run seeds of a baseline come from default_rng([seed, SEED_STREAM])


def _tpe(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _gp(seed: int):
    import warnings

    import optuna

    with warnings.catch_warnings():  # "GPSampler is experimental": known, and not the user's
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(seed=seed)


def _random(seed: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


# name -> a sampler built from the study's seed ("random-subsets": random search, best trial)
BASELINES: dict[str, Callable[[int], Any]] = {"optuna-tpe": _tpe, "optuna-gp": _gp,
                                              "random-subsets": _random}


def best_subset(sampler_name: str, names: list[str], run: Callable[[frozenset[str], int],
                                                                   float | None],
                budget_trials: int, seed: int, direction: str) -> frozenset[str]:
    """The hypotheses of the best of `budget_trials` trials chosen by the sampler; each trial's
    value is run(applied, run_seed), None for a failed run. The base config (nothing applied)
    when every trial failed."""
    try:
        import optuna
    except ImportError as exc:
        raise RuntimeError(f"{sampler_name} needs Optuna: pip install -e '.[bench]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if direction == "lower" else "maximize",
                                sampler=BASELINES[sampler_name](seed))
    seeds = np.random.default_rng([seed, SEED_STREAM]).integers(0, 2**31 - 1, budget_trials)
    for run_seed in seeds:
        trial = study.ask()
        applied = frozenset(n for n in names if trial.suggest_categorical(n, [False, True]))
        value = run(applied, int(run_seed))
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return frozenset()
    return frozenset(n for n, on in study.best_trial.params.items() if on)


def verdicts_without_gain(applied: frozenset[str], names: list[str],
                          no_gain: Callable[[frozenset[str], frozenset[str]], bool | None]
                          ) -> tuple[int, int, int]:
    """(false keeps, null verdicts, judged keeps) of a final configuration. no_gain(without,
    members) says whether adding `members` to `without` brings no true gain (None where the truth
    does not say). A kept hypothesis is a false keep when removing it loses no gain; every
    hypothesis, kept or not, has a null verdict when it brings no gain to the configuration
    without it; judged keeps are the kept hypotheses whose truth is known."""
    false_keeps = null_verdicts = judged = 0
    for name in names:
        verdict = no_gain(applied - {name}, frozenset({name}))
        if verdict is None:
            continue
        null_verdicts += verdict
        false_keeps += verdict and name in applied
        judged += name in applied
    return false_keeps, null_verdicts, judged
