"""The training loop shared by every backend: budget, progress-driven schedule, FAIL check,
evaluation."""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from train import architecture as arch
from train.config import TrainConfig
from train.data import VOCAB_SIZE, PreparedData, sample_batch
from train.evaluate import current_eval_hash, evaluate_val_bpb
from train.schedule import lr_multiplier

# A loss above three times the uniform guess (ln 257 = 5.55 nats) means training has diverged.
EXPLODING_LOSS = 3 * math.log(VOCAB_SIZE)
LOG_EVERY_SECONDS = 5.0


class Backend(Protocol):
    name: str
    num_params: int
    flops_per_token: float

    def train_step(
        self, inputs: np.ndarray, targets: np.ndarray, lr_multiplier: float, inject_nan: bool
    ) -> float: ...
    def per_token_nats(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray: ...
    def peak_memory_mb(self) -> float: ...
    def peak_flops(self) -> float: ...
    def device_name(self) -> str: ...


class TrainingFailed(RuntimeError):
    """NaN or exploding loss; the CLI prints FAIL and exits 1."""


@dataclass(frozen=True)
class RunResult:
    val_bpb: float | None  # None when the run is evaluated by train.judge instead
    training_seconds: float
    total_seconds: float
    peak_vram_mb: float
    peak_rss_mb: float
    mfu_percent: float
    total_tokens: int
    num_steps: int
    num_params: int
    depth: int
    eval_hash: str  # "" when val_bpb is None
    backend: str
    device: str  # the hardware (a GPU's name): runs on two kinds differ by more than luck
    seed: int

    def summary(self) -> str:
        """The summary block of the trainer's command-line contract (docs/ARCHITECTURE.md)."""
        rows = [
            *([("val_bpb", f"{self.val_bpb:.6f}")] if self.val_bpb is not None else []),
            ("training_seconds", f"{self.training_seconds:.1f}"),
            ("total_seconds", f"{self.total_seconds:.1f}"),
            ("peak_vram_mb", f"{self.peak_vram_mb:.1f}"),
            ("peak_rss_mb", f"{self.peak_rss_mb:.1f}"),
            ("mfu_percent", f"{self.mfu_percent:.2f}"),
            ("total_tokens_M", f"{self.total_tokens / 1e6:.3f}"),
            ("num_steps", str(self.num_steps)),
            ("num_params_M", f"{self.num_params / 1e6:.3f}"),
            ("depth", str(self.depth)),
            *([("eval_hash", self.eval_hash)] if self.eval_hash else []),
            ("backend", self.backend),
            ("device_name", self.device),
            ("seed", str(self.seed)),
        ]
        return "---\n" + "\n".join(f"{key + ':':<18}{value}" for key, value in rows)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (ru_maxrss counts KiB on Linux, bytes on
    macOS): the run's memory on a CPU, where peak_vram_mb is 0."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(config: TrainConfig, data: PreparedData, backend: Backend, started: float,
          evaluate: bool = True) -> RunResult:
    """Train until `steps` steps or `time_budget` timed seconds, evaluate (unless `evaluate` is
    false: a patched run, which train.judge evaluates), and return the result.

    Progress (which drives the lr schedule) is step / steps in fixed-step mode, else timed
    seconds / time_budget; the first `untimed_steps` steps are excluded from the timed seconds.
    `started` is the perf_counter reading at program start, for total_seconds.
    """
    rng = np.random.default_rng(arch.stream_seed(config.seed, "data"))  # the batches' stream
    peak_flops = backend.peak_flops()
    training_seconds, step, last_log = 0.0, 0, time.perf_counter()
    while True:
        progress = step / config.steps if config.steps else training_seconds / config.time_budget
        if progress >= 1.0:
            break
        step_start = time.perf_counter()
        inputs, targets = sample_batch(
            data.train_tokens, data.train_starts, config.batch_size, config.seq_len, rng
        )
        multiplier = lr_multiplier(
            progress, config.warmup_ratio, config.warmdown_ratio, config.final_lr_frac
        )
        inject_nan = step == config.debug_nan_step
        loss = backend.train_step(inputs, targets, multiplier, inject_nan=inject_nan)
        step_seconds = time.perf_counter() - step_start
        if not math.isfinite(loss) or loss > EXPLODING_LOSS:
            raise TrainingFailed(f"loss {loss} at step {step} (limit {EXPLODING_LOSS:.2f} nats)")
        if step >= config.untimed_steps:
            training_seconds += step_seconds
        step += 1
        if time.perf_counter() - last_log > LOG_EVERY_SECONDS:
            last_log = time.perf_counter()
            _log(f"step {step:5d} | loss {loss:.4f} | lr x{multiplier:.3f} | "
                 f"{training_seconds:.1f}s")
    val_bpb, evaluation_hash = None, ""
    if evaluate:
        _log(f"trained {step} steps; evaluating on {config.eval_tokens} validation tokens")
        val_bpb = evaluate_val_bpb(
            backend.per_token_nats, data.val_tokens, config.eval_seq_len, config.eval_tokens
        )
        if not math.isfinite(val_bpb):
            raise TrainingFailed(f"val_bpb is {val_bpb}")
        evaluation_hash = current_eval_hash(
            data.val_tokens, config.eval_seq_len, config.eval_tokens)
    timed_tokens = max(step - config.untimed_steps, 0) * config.tokens_per_step
    achieved_flops = (
        backend.flops_per_token * timed_tokens / training_seconds if training_seconds > 0 else 0.0
    )
    return RunResult(
        val_bpb=val_bpb,
        training_seconds=training_seconds,
        total_seconds=time.perf_counter() - started,
        peak_vram_mb=backend.peak_memory_mb(),
        peak_rss_mb=peak_rss_mb(),
        mfu_percent=100.0 * achieved_flops / peak_flops,
        total_tokens=step * config.tokens_per_step,
        num_steps=step,
        num_params=backend.num_params,
        depth=config.n_layer,
        eval_hash=evaluation_hash,
        backend=backend.name,
        device=backend.device_name(),
        seed=config.seed,
    )
