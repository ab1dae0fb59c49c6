"""The trainer's knobs: one frozen dataclass, validated, loaded from TOML/JSON, overridden by flags.

Every knob is a field of `TrainConfig`; a config file's keys are the field names, and a flag is
`--field-name VALUE` (dashes or underscores). Unknown keys, unparsable values and values out of
range raise `ConfigError` whose message names the key and the value; the CLI turns it into exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from train.vocabulary import BACKENDS


class ConfigError(ValueError):
    """A bad key or value in a config file or on the command line."""


@dataclass(frozen=True)
class TrainConfig:
    # model (defaults: the CPU miniature)
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    mlp_ratio: int = 4
    seq_len: int = 256
    value_embeds: bool = True  # value embeddings mixed into attention values on alternating layers
    window_pattern: str = "SSSL"  # per layer, cycled: S = window seq_len // 2, L = full; last is L
    logit_softcap: float = 15.0  # 0 disables the tanh cap
    # optimisation
    batch_size: int = 12  # rows of seq_len tokens per step
    matrix_lr: float = 0.08  # Muon, 2-D matrices inside the blocks
    embedding_lr: float = 0.6  # AdamW, token and value embeddings
    unembedding_lr: float = 0.02  # AdamW, the untied output head
    scalar_lr: float = 0.5  # AdamW, residual / x0 / value-mix lambdas
    weight_decay: float = 0.0  # decoupled, on Muon matrices, scaled by the lr schedule
    adam_beta1: float = 0.8
    adam_beta2: float = 0.95
    muon_momentum: float = 0.95
    warmup_ratio: float = 0.0  # share of progress with a linear lr ramp-up
    warmdown_ratio: float = 0.5  # share of progress with a linear ramp-down to final_lr_frac
    final_lr_frac: float = 0.0
    # run
    seed: int = 1
    steps: int = 0  # > 0: fixed-step deterministic mode; time_budget is then ignored
    time_budget: float = 30.0  # seconds of training, excluding untimed_steps and evaluation
    untimed_steps: int = 2  # first steps (warm-up, allocation) not counted in the budget
    backend: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = all cores (mlx has no such setting, ignores it)
    # data and evaluation (eval_seq_len, eval_tokens and the data are covered by eval_hash)
    data: str = ""  # "" = the shipped corpus; else a .txt/.txt.gz/.parquet file or a directory
    text_column: str = "text"  # parquet column holding documents
    eval_seq_len: int = 256
    eval_tokens: int = 131072
    # debugging
    debug_nan_step: int = -1  # >= 0: multiply the loss by NaN at that step (tests the FAIL path)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


FIELD_TYPES: dict[str, type] = {f.name: type(f.default) for f in fields(TrainConfig)}


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"bad value for {key!r}: {value!r} (allowed: {allowed})")


def validate(config: TrainConfig) -> None:
    """Check every range; raise ConfigError naming the first bad key and value."""
    for key in ("n_layer", "n_embd", "n_head", "mlp_ratio", "batch_size"):
        if getattr(config, key) < 1:
            _fail(key, getattr(config, key), "an integer >= 1")
    if config.n_embd % config.n_head:
        _fail("n_embd", config.n_embd, f"a multiple of n_head={config.n_head}")
    if config.head_dim % 2:
        _fail("n_head", config.n_head, "a divisor of n_embd giving an even head size (rotary)")
    for key in ("seq_len", "eval_seq_len"):
        if getattr(config, key) < 2:
            _fail(key, getattr(config, key), "an integer >= 2")
    if config.eval_tokens < config.eval_seq_len:
        _fail("eval_tokens", config.eval_tokens,
              f"an integer >= eval_seq_len={config.eval_seq_len}")
    if not re.fullmatch(r"[SL]+", config.window_pattern):
        _fail("window_pattern", config.window_pattern, "a non-empty string of S and L")
    nonneg = ("logit_softcap", "matrix_lr", "embedding_lr", "unembedding_lr", "scalar_lr",
              "weight_decay", "warmup_ratio", "warmdown_ratio", "final_lr_frac")
    for key in nonneg:
        value = getattr(config, key)
        if not (math.isfinite(value) and value >= 0):
            _fail(key, value, "a finite number >= 0")
    for key in ("adam_beta1", "adam_beta2", "muon_momentum"):
        if not 0 <= getattr(config, key) < 1:
            _fail(key, getattr(config, key), "a number in [0, 1)")
    if config.final_lr_frac > 1:
        _fail("final_lr_frac", config.final_lr_frac, "a number in [0, 1]")
    if config.warmup_ratio + config.warmdown_ratio > 1:
        _fail("warmdown_ratio", config.warmdown_ratio, f"<= 1 - warmup_ratio={config.warmup_ratio}")
    if config.seed < 0:
        _fail("seed", config.seed, "an integer >= 0")
    for key in ("steps", "untimed_steps", "threads"):
        if getattr(config, key) < 0:
            _fail(key, getattr(config, key), "an integer >= 0")
    if not (math.isfinite(config.time_budget) and config.time_budget > 0):
        _fail("time_budget", config.time_budget, "a finite number of seconds > 0")
    if config.backend not in BACKENDS:
        _fail("backend", config.backend, " | ".join(BACKENDS))
    if not config.text_column:
        _fail("text_column", config.text_column, "a non-empty column name")
    if config.debug_nan_step < -1:
        _fail("debug_nan_step", config.debug_nan_step, "-1 (off) or a step index >= 0")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(key: str, text: str) -> Any:
    """Convert one flag's text to the type of knob `key`; ConfigError names key and text."""
    if key not in FIELD_TYPES:
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(sorted(FIELD_TYPES))})")
    kind = FIELD_TYPES[key]
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"bad value for {key!r}: {text!r} (expected {kind.__name__})") from None


def _coerce(key: str, value: Any) -> Any:
    """Check a value read from a file has the knob's type (ints are accepted for floats)."""
    if key not in FIELD_TYPES:
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(sorted(FIELD_TYPES))})")
    kind = FIELD_TYPES[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ConfigError(f"bad value for {key!r}: {value!r} (expected {kind.__name__})")
    return value


def build_config(values: Mapping[str, Any]) -> TrainConfig:
    """TrainConfig from a mapping of knob names to typed values; ConfigError on any bad entry."""
    coerced = {key: _coerce(key, value) for key, value in values.items()}
    return TrainConfig(**coerced)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a flat table of knobs from a .toml or .json file (values not yet validated)."""
    if not path.is_file():
        raise ConfigError(f"bad value for 'config': {str(path)!r} (no such file)")
    try:
        if path.suffix == ".toml":
            table = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            table = json.loads(path.read_text())
        else:
            raise ConfigError(
                f"bad value for 'config': {str(path)!r} (allowed: a .toml or .json file)"
            )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"bad value for 'config': {str(path)!r} ({error})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"bad value for 'config': {str(path)!r} (expected a table of knobs)")
    return table


def split_flags(argv: Sequence[str], names: Sequence[str], required: Sequence[str] = ()
                ) -> tuple[dict[str, str], list[str]]:
    """The flags of `names` (not knobs: a command's own, such as --weights) with their values,
    and the arguments left for `parse_args`; ConfigError for one without a value or a
    `required` one missing."""
    flags: dict[str, str] = {}
    rest: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in names:
            value = next(tokens, None)
            if value is None:
                raise ConfigError(f"flag {token!r} needs a value")
            flags[token] = value
        else:
            rest.append(token)
    missing = [name for name in required if name not in flags]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} needed")
    return flags, rest


def parse_args(argv: Sequence[str]) -> TrainConfig:
    """`[--config FILE] [--knob VALUE ...]` -> TrainConfig; flags override the file."""
    file_values: dict[str, Any] = {}
    flag_values: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"bad argument {token!r} (expected --knob VALUE)")
        name, has_inline, inline = token[2:].partition("=")
        key = name.replace("-", "_")
        if has_inline:
            text = inline
            index += 1
        elif index + 1 < len(argv):
            text = argv[index + 1]
            index += 2
        else:
            raise ConfigError(f"flag {token!r} needs a value")
        if key == "config":
            file_values = load_config_file(Path(text))
        else:
            flag_values[key] = parse_value(key, text)
    return build_config({**file_values, **flag_values})


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
