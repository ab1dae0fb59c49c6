"""Forecasts of effects, scored against the posterior: the plumbing from a study's state to
beliefs.scores (whose formulas are checked against Monte Carlo in tests/beliefs)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from beliefs import BeliefPrior, Observation
from engine.proposer import Hypothesis
from engine.state import StudyState
from engine.summary import forecast_lines
from policies.keep import probability_better_than
from tests.engine.test_engine_core import make_rules


def scored(sign: float) -> tuple:
    """A world where `a` improves the metric by 0.5 (lower is better when sign is +1) and `b`
    does nothing, forecast right (a), with the wrong sign (wrong), or not at all (b)."""
    forecasts = {"a": -0.5, "wrong": 0.5}
    hypotheses = [Hypothesis(n, "k", {n: 1}, predicted_effect=sign * forecasts.get(n, 0.0),
                             predicted_sd=0.2 if n in forecasts else 0.0)
                  for n in ("a", "wrong", "b")]
    state = StudyState.start(hypotheses, BeliefPrior(), False)
    rng = np.random.default_rng(0)
    truth = {"a": -0.5, "wrong": -0.5, "b": 0.0}
    observations = [Observation(frozenset(), sign * (1 + 0.1 * rng.normal())) for _ in range(4)]
    observations += [Observation(frozenset({n}), sign * (1 + truth[n] + 0.1 * rng.normal()))
                     for n in truth for _ in range(4)]
    beliefs = state.beliefs.copy()
    beliefs.update([dataclasses.replace(o, value=sign * o.value) for o in observations])
    state = dataclasses.replace(state, beliefs=beliefs)
    rules = dataclasses.replace(make_rules(), sign=sign)
    return state, rules, {line.name: line for line in forecast_lines(state, rules)}


def test_a_right_forecast_beats_the_directionless_one_and_a_wrong_one_loses_to_it():
    state, _, lines = scored(1.0)
    assert set(lines) == {"a", "wrong"}  # b has no forecast
    right, wrong = lines["a"], lines["wrong"]
    assert right.log_score > right.reference_log_score and right.brier < right.reference_brier
    assert wrong.log_score < wrong.reference_log_score and wrong.brier > wrong.reference_brier
    q = probability_better_than(state.beliefs, frozenset({"a"}), frozenset())[0]
    assert right.posterior_p_better == pytest.approx(float(q))
    assert right.forecast_p_better > 0.99 and wrong.forecast_p_better < 0.01


def test_the_scores_do_not_depend_on_the_metrics_direction():
    """The same world with the metric negated and higher better, forecasts negated too."""
    _, _, lower = scored(1.0)
    _, _, higher = scored(-1.0)
    for name in lower:
        a, b = lower[name], higher[name]
        assert b.forecast == -a.forecast
        assert (b.log_score, b.brier, b.posterior_p_better) == pytest.approx(
            (a.log_score, a.brier, a.posterior_p_better))


def test_the_report_lists_each_forecast_and_the_means():
    from types import SimpleNamespace

    from engine.report import forecast_report

    _, _, lines = scored(1.0)
    text = "\n".join(forecast_report(SimpleNamespace(forecasts=tuple(lines.values()))))
    right = lines["a"]
    assert f"| a | -0.5 | 0.2 | {right.forecast_p_better:.2f} / " in text
    mean_log = (lines["a"].log_score + lines["wrong"].log_score) / 2
    assert f"Mean over 2 forecasts: log score {mean_log:.2f} against" in text
