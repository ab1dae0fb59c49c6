"""python -m train [--config FILE.toml|FILE.json] [--seed N] [--steps N | --time-budget S]
                   [--backend B] [--knob VALUE ...] [--help]
                   [--training-split FILE.npz --save-weights FILE.pt]

The last two make a patched run (docs/ARCHITECTURE.md, "Code-patch hypotheses"): it trains on a
split that holds no validation text, saves its weights and is not evaluated here; train.judge
evaluates it in another process.

Prints progress to stderr and ends stdout with the summary block (docs/ARCHITECTURE.md). Exit 0 on
success, 1 with a line starting FAIL on a NaN or exploding loss, 2 on a bad flag, config or data,
3 with a line starting REFUSED when the training data repeats validation text.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core box spinning threads fight
# other processes and made steps up to 6x slower in our measurements. Must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from train.config import ConfigError, TrainConfig, parse_args, split_flags
from train.data import DataError, LeakError, prepare, read_training_split
from train.loop import Backend, TrainingFailed, train


def make_backend(config: TrainConfig) -> Backend:
    """The backend named by config.backend ('auto' resolves to cuda > mps > cpu)."""
    if config.backend == "mlx":
        try:
            from train.mlx_backend import MLXBackend
        except ImportError as error:
            raise ConfigError(
                f"bad value for 'backend': 'mlx' (mlx cannot be imported: {error})"
            ) from None
        return MLXBackend(config)
    from train.torch_backend import TorchBackend, resolve_device

    return TorchBackend(config, resolve_device(config.backend))


def usage() -> str:
    """This module's docstring, then every knob with its type and default."""
    knobs = [f"  --{f.name.replace('_', '-'):<18} {type(f.default).__name__:<6} "
             f"default {f.default!r}" for f in dataclasses.fields(TrainConfig)]
    return "\n".join([__doc__.strip(), "", "knobs (also the keys of a config file):", *knobs])


RUN_FLAGS = ("--training-split", "--save-weights")


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    if any(token in ("-h", "--help") for token in argv):
        print(usage())
        return 0
    try:
        flags, argv = split_flags(argv, RUN_FLAGS)
        if len(flags) == 1:
            raise ConfigError(f"{' and '.join(RUN_FLAGS)} go together")
        config = parse_args(argv)
        if flags:
            if config.backend == "mlx":
                raise ConfigError("a patched run needs the torch backend (mlx has no save)")
            data = read_training_split(Path(flags["--training-split"]))
        else:
            data = prepare(config.data, config.text_column, config.eval_tokens)
        backend = make_backend(config)
        result = train(config, data, backend, started, evaluate=not flags)
        if flags:
            backend.save_weights(Path(flags["--save-weights"]))
    except LeakError as error:
        print(f"REFUSED: {error}", flush=True)
        return 3
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingFailed as error:
        print(f"FAIL: {error}", flush=True)
        return 1
    print(result.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
