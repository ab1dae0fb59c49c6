"""The python env: a callable's value read as a run's outcome, and the callable found by name."""
from __future__ import annotations

import math
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from envs.python import PythonEnv, load_function, metric_of, source_hash
from train.vocabulary import METRIC_LIMIT


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-METRIC_LIMIT,
                 max_value=METRIC_LIMIT) | st.integers(-10**6, 10**6))
def test_a_finite_number_within_the_limit_is_the_metric_itself(value):
    assert metric_of(value) == (float(value), "ok", "")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, METRIC_LIMIT * 2, -1e300])
def test_nan_infinities_and_values_past_the_limit_are_nan_runs(value):
    got, status, reason = metric_of(value)
    assert got is None and status == "nan" and repr(float(value)) in reason


@pytest.mark.parametrize("value", [None, True, "0.5", [1.0], {"loss": 1.0}, 1j])
def test_anything_but_a_real_number_is_a_crash_that_names_its_type(value):
    got, status, reason = metric_of(value)
    assert got is None and status == "crash" and type(value).__name__ in reason


def test_a_run_passes_a_copy_of_the_config_and_the_seed():
    seen = []

    def objective(config, seed):
        seen.append((dict(config), seed))
        config["lr"] = "mutated"  # must not reach the study's config
        return config.get("width", 1) * 0.5 + seed

    env = PythonEnv(base={"width": 2}, objective=objective)
    config = {"width": 4}
    outcome = env.run(config, 7)
    assert (outcome.metric, outcome.status) == (9.0, "ok") and outcome.seconds >= 0
    assert seen == [({"width": 4}, 7)] and config == {"width": 4}


def test_an_exception_is_a_crash_run_with_its_traceback():
    def objective(config, seed):
        raise ZeroDivisionError("the learning rate divided by nothing")

    outcome = PythonEnv(objective=objective).run({}, 0)
    assert outcome.metric is None and outcome.status == "crash"
    assert "ZeroDivisionError" in outcome.extra["reason"]
    assert "the learning rate divided by nothing" in outcome.extra["stderr_tail"]
    assert "Traceback" in outcome.extra["stderr_tail"]


def test_a_returned_nan_is_a_nan_run():
    outcome = PythonEnv(objective=lambda config, seed: float("nan")).run({}, 0)
    assert (outcome.metric, outcome.status) == (None, "nan")


def test_an_env_with_no_objective_makes_no_runs_and_says_so():
    env = PythonEnv(base={"a": 1})
    assert not env.makes_runs
    with pytest.raises(RuntimeError, match="told"):
        env.run({"a": 1}, 0)


def test_a_hypothesis_may_change_only_the_bases_knobs_and_never_the_seed():
    env = PythonEnv(base={"lr": 0.1, "width": 2}, objective=lambda c, s: 0.0)
    assert env.change_problem({"lr": 0.2}) is None
    assert "'lrr'" in env.change_problem({"lrr": 0.2})
    assert "seed" in env.change_problem({"seed": 3})
    assert PythonEnv(objective=lambda c, s: 0.0).change_problem({"anything": 1}) is None


def write_module(tmp_path, name="objectives"):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent("""
        def quadratic(config, seed):
            return (config.get("x", 0.0) - 1.0) ** 2 + seed * 0.0

        NOT_CALLABLE = 3
    """))
    return path


def test_a_function_is_found_in_a_file_beside_the_config(tmp_path):
    write_module(tmp_path)
    function = load_function("objectives.py:quadratic", tmp_path)
    assert function({"x": 3.0}, 0) == 4.0
    env = PythonEnv(function="objectives.py:quadratic", base={"x": 0.0}, base_dir=tmp_path)
    assert env.makes_runs and env.run({"x": 0.0}, 1).metric == 1.0


def test_a_function_is_found_by_module_name(tmp_path, monkeypatch):
    write_module(tmp_path, "my_objectives_module")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_function("my_objectives_module:quadratic", tmp_path)({"x": 1.0}, 0) == 0.0
    finally:
        sys.modules.pop("my_objectives_module", None)


@pytest.mark.parametrize("target, words", [
    ("no_colon", "expected 'package.module:name'"),
    ("objectives.py:", "expected"),
    ("missing.py:f", "no file"),
    ("objectives.py:absent", "no callable 'absent'"),
    ("objectives.py:NOT_CALLABLE", "no callable 'NOT_CALLABLE'"),
    ("no_such_module_anywhere:f", "importing no_such_module_anywhere failed"),
    ("broken.py:f", "ZeroDivisionError"),
])
def test_a_function_that_cannot_be_found_is_refused_saying_why(tmp_path, target, words):
    write_module(tmp_path)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    with pytest.raises(ValueError, match="function") as info:
        load_function(target, tmp_path)
    assert words in str(info.value)


def test_an_objective_and_a_function_together_are_refused(tmp_path):
    write_module(tmp_path)
    with pytest.raises(ValueError, match="give one"):
        PythonEnv(function="objectives.py:quadratic", objective=lambda c, s: 0.0,
                  base_dir=tmp_path)
    with pytest.raises(ValueError, match="callable"):
        PythonEnv(objective=3)


def test_the_code_hash_follows_the_source_and_the_fingerprint_the_base():
    def first(config, seed):
        return 1.0

    def second(config, seed):
        return 2.0

    assert source_hash(first) != source_hash(second)
    assert source_hash(first) == source_hash(first)
    a = PythonEnv(base={"x": 1}, objective=first)
    assert a.fingerprint() == PythonEnv(base={"x": 1}, objective=first).fingerprint()
    assert a.fingerprint() != PythonEnv(base={"x": 2}, objective=first).fingerprint()
    assert a.fingerprint() != PythonEnv(base={"x": 1}, objective=second).fingerprint()
