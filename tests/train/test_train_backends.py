"""Both backends learn, and the MLX model is the torch model: same weights give the same nats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.config import TrainConfig
from train.data import prepare, sample_batch
from train.evaluate import evaluate_val_bpb
from train.torch_backend import TorchBackend

TINY = dict(
    n_layer=2, n_embd=32, n_head=2, seq_len=64, batch_size=8, eval_seq_len=64, eval_tokens=4096,
    threads=1,
)


def _train_and_score(backend, config: TrainConfig, steps: int) -> tuple[float, float]:
    data = prepare(config.data, config.text_column, config.eval_tokens)
    def score() -> float:
        return evaluate_val_bpb(
            backend.per_token_nats, data.val_tokens, config.eval_seq_len, config.eval_tokens
        )

    before = score()
    rng = np.random.default_rng(config.seed)
    for _ in range(steps):
        inputs, targets = sample_batch(
            data.train_tokens, data.train_starts, config.batch_size, config.seq_len, rng
        )
        backend.train_step(inputs, targets, 1.0, inject_nan=False)
    after = score()
    return before, after


def test_torch_cpu_learns_from_the_untrained_eight_bits(cache_env):
    config = TrainConfig(**TINY)
    before, after = _train_and_score(TorchBackend(config, "cpu"), config, steps=40)
    assert before == pytest.approx(math.log2(257), abs=0.05)  # a near-zero head is a uniform guess
    assert after < before - 2.0


def test_mlx_learns_in_a_handful_of_steps(cache_env):
    from train.mlx_backend import MLXBackend

    config = TrainConfig(**TINY)
    before, after = _train_and_score(MLXBackend(config), config, steps=15)
    assert before == pytest.approx(math.log2(257), abs=0.05)
    assert after < before - 1.0


def test_mlx_and_torch_give_the_same_nats_for_the_same_weights():
    """Same architecture on both backends: copy trained-looking random weights across, compare."""
    import mlx.core as mx

    from train.mlx_backend import MLXBackend

    config = TrainConfig(
        **{**TINY, "window_pattern": "SL", "logit_softcap": 3.0, "eval_seq_len": 96}
    )
    torch_backend = TorchBackend(config, "cpu")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        # every parameter random: the zero-initialised projections must matter too
        for parameter in torch_backend.model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    mlx_backend = MLXBackend(config)
    weights = [
        (name, mx.array(p.detach().numpy()))
        for name, p in torch_backend.model.named_parameters()
    ]
    mlx_backend.model.load_weights(weights, strict=True)
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 257, size=(3, 96))
    targets = rng.integers(0, 257, size=(3, 96))
    torch_nats = torch_backend.per_token_nats(inputs, targets)
    mlx_nats = mlx_backend.per_token_nats(inputs, targets)
    assert np.abs(torch_nats - mlx_nats).max() < 1e-4 * max(1.0, np.abs(torch_nats).max())
