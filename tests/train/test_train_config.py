"""Config parsing: files, flags, overrides, and errors that name the key and the value."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.config import FIELD_TYPES, ConfigError, TrainConfig, parse_args, parse_value


def test_defaults_are_the_cpu_miniature():
    config = parse_args([])
    assert (config.n_layer, config.n_embd, config.seq_len, config.backend) == (2, 128, 256, "auto")
    assert 2048 <= config.tokens_per_step <= 4096


def test_flags_override_the_file_and_accept_dashes_or_underscores(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('n_layer = 3\nmatrix_lr = 1\nvalue_embeds = false\nwindow_pattern = "L"\n')
    config = parse_args(["--config", str(path), "--n-layer", "4", "--seq_len=128"])
    chosen = (config.n_layer, config.seq_len, config.matrix_lr, config.value_embeds)
    assert chosen == (4, 128, 1.0, False)
    assert config.window_pattern == "L"
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"n_embd": 64, "n_head": 2}))
    assert parse_args(["--n-head", "4", "--config", str(json_path)]).n_head == 4


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--n-layer", "abc"], "'abc'"),
        (["--n-layer", "0"], "'n_layer': 0"),
        (["--backend", "tpu"], "'tpu'"),
        (["--n-embd", "100", "--n-head", "3"], "'n_embd': 100"),
        (["--window-pattern", "SXL"], "'SXL'"),
        (["--value-embeds", "maybe"], "'maybe'"),
        (["--time-budget", "nan"], "'time_budget': nan"),
        (["--warmup-ratio", "0.6", "--warmdown-ratio", "0.6"], "'warmdown_ratio': 0.6"),
        (["--no-such-knob", "1"], "'no_such_knob'"),
        (["--seed"], "'--seed'"),
        (["positional"], "'positional'"),
        (["--eval-tokens", "10", "--eval-seq-len", "64"], "'eval_tokens': 10"),
    ],
)
def test_bad_flags_raise_an_error_naming_the_value(argv, named):
    with pytest.raises(ConfigError) as error:
        parse_args(argv)
    assert named in str(error.value)


def test_bad_file_entries_name_key_and_value(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('n_layer = "two"\n')
    with pytest.raises(ConfigError, match="'n_layer': 'two'"):
        parse_args(["--config", str(path)])
    path.write_text("depthh = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'depthh'"):
        parse_args(["--config", str(path)])
    with pytest.raises(ConfigError, match="no such file"):
        parse_args(["--config", str(tmp_path / "missing.toml")])


knob_values = {
    "n_layer": st.integers(1, 64),
    "n_embd": st.sampled_from([32, 64, 128, 256]),
    "seq_len": st.integers(2, 4096),
    "matrix_lr": st.floats(0, 10, allow_nan=False),
    "adam_beta1": st.floats(0, 0.999, allow_nan=False),
    "value_embeds": st.booleans(),
    "window_pattern": st.text(alphabet="SL", min_size=1, max_size=8),
    "backend": st.sampled_from(["auto", "cuda", "mps", "cpu", "mlx"]),
    "seed": st.integers(0, 2**31),
}


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({}, optional=knob_values))
def test_flags_round_trip_through_their_text(values):
    """Any valid knob values, written as flags, parse back to exactly those values."""
    argv = [
        item for key, value in values.items()
        for item in (f"--{key.replace('_', '-')}", str(value))
    ]
    config = parse_args(argv)
    assert {key: getattr(config, key) for key in values} == values


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({}, optional=knob_values), st.integers(1, 64))
def test_a_file_and_a_flag_agree_and_the_flag_wins(tmp_path_factory, values, layers):
    path = tmp_path_factory.mktemp("cfg") / "c.json"
    path.write_text(json.dumps(values))
    from_file = parse_args(["--config", str(path)])
    assert {key: getattr(from_file, key) for key in values} == values
    assert parse_args(["--config", str(path), "--n-layer", str(layers)]).n_layer == layers


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(k for k, t in FIELD_TYPES.items() if t in (int, float))),
    st.text(max_size=12),
)
def test_numeric_knobs_reject_text_that_is_not_a_number(key, text):
    try:
        float(text)
        return  # a number: not this property's concern
    except ValueError:
        pass
    with pytest.raises(ConfigError) as error:
        parse_value(key, text)
    assert repr(text) in str(error.value) and repr(key) in str(error.value)


def test_every_knob_has_a_default_and_the_dataclass_is_frozen():
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_layer = 3  # type: ignore[misc]
    assert set(FIELD_TYPES) == {f.name for f in dataclasses.fields(TrainConfig)}
