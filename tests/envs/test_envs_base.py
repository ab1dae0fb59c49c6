"""Outcome's invariants, the registry and make_env's handling of the [env] table."""
from __future__ import annotations

import inspect

import pytest

from envs import ENVS, Outcome, make_env


def test_registry_holds_the_four_kinds_and_their_keys_are_constructor_arguments():
    assert sorted(ENVS) == ["command", "gpt", "python", "synthetic"]
    for env_class in ENVS.values():
        parameters = inspect.signature(env_class).parameters
        assert env_class.section_keys <= set(parameters), env_class.kind


def test_outcome_keeps_metric_and_status_consistent():
    assert Outcome(1.0, "ok", 2.0).extra == {}
    with pytest.raises(ValueError, match="finite metric"):
        Outcome(None, "ok", 1.0)
    with pytest.raises(ValueError, match="finite metric"):
        Outcome(float("nan"), "ok", 1.0)
    with pytest.raises(ValueError, match="carries no metric"):
        Outcome(1.0, "crash", 1.0)
    with pytest.raises(ValueError, match="'exploded'"):
        Outcome(None, "exploded", 1.0)


def test_make_env_names_a_bad_kind_and_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="'quantum'"):
        make_env({"kind": "quantum"}, base_dir=tmp_path)
    with pytest.raises(ValueError, match="'world_sed'"):
        make_env({"kind": "synthetic", "world_sed": 1}, base_dir=tmp_path)
