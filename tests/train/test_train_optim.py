"""Pure maths of the optimiser, schedule and FLOP count against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.architecture import layer_windows
from train.config import TrainConfig
from train.flops import flops_per_token, mean_attended_context
from train.model import GPT
from train.optim import build_optimizers, newton_schulz
from train.schedule import lr_multiplier


@pytest.mark.parametrize("shape", [(32, 32), (32, 128), (128, 32)])
def test_newton_schulz_maps_singular_values_into_the_documented_band(shape):
    """Singular values spread 50x (any overall scale) all land in [0.68, 1.14]; directions kept."""
    generator = torch.Generator().manual_seed(0)
    rank = min(shape)
    left, _ = torch.linalg.qr(torch.randn(shape[0], rank, generator=generator))
    right, _ = torch.linalg.qr(torch.randn(shape[1], rank, generator=generator))
    spread = torch.logspace(np.log10(0.02), 0, rank)
    matrix = 37.0 * left @ torch.diag(spread) @ right.T
    orthogonalised = newton_schulz(matrix)
    singular = torch.linalg.svdvals(orthogonalised)
    assert singular.min() > 0.6 and singular.max() < 1.2
    polar = left @ right.T  # the exact orthogonal factor U V^T
    cosine = (orthogonalised * polar).sum() / (polar.norm() * orthogonalised.norm())
    assert cosine > 0.95


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0, 1))
def test_lr_multiplier_is_the_trapezoid(progress, warmup, warmdown, final):
    value = lr_multiplier(progress, warmup, warmdown, final)
    assert min(final, 1.0) - 1e-12 <= value <= 1.0 + 1e-12 or progress < warmup
    if warmup <= progress <= 1 - warmdown:
        assert value == 1.0
    if warmdown > 0 and progress > 1 - warmdown and progress >= warmup:
        assert value == pytest.approx(final + (1 - final) * (1 - progress) / warmdown)
    if progress < warmup:
        assert value == pytest.approx(progress / warmup)


def test_lr_multiplier_end_points():
    assert lr_multiplier(1.0, 0.0, 0.5, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(0.5, 0.0, 0.5, 0.0) == 1.0
    assert lr_multiplier(0.75, 0.0, 0.5, 0.0) == pytest.approx(0.5)
    assert lr_multiplier(0.05, 0.1, 0.0, 0.0) == pytest.approx(0.5)


def test_flops_per_token_formula_and_attended_context():
    assert flops_per_token(1000, 2, 8, 10.0) == 6 * 1000 + 12 * 2 * 8 * 10
    full = TrainConfig(n_layer=2, seq_len=8, window_pattern="L")
    assert mean_attended_context(full) == pytest.approx(4.5)  # mean of 1..8
    windowed = TrainConfig(n_layer=2, seq_len=8, window_pattern="S")
    assert layer_windows(windowed) == [4, 8]
    short = np.minimum(np.arange(1, 9), 4).mean()
    assert mean_attended_context(windowed) == pytest.approx((short + 4.5) / 2)


def test_every_parameter_has_exactly_one_optimizer():
    model = GPT(TrainConfig(n_layer=3, n_embd=32, n_head=2, seq_len=16, eval_seq_len=16))
    optimizers = build_optimizers(model, model.config)
    owned = [id(p) for o in optimizers for g in o.param_groups for p in g["params"]]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())
    muon_params = {id(p) for p in optimizers[0].param_groups[0]["params"]}
    assert muon_params == {id(p) for p in model.matrix_parameters()}
    assert set(model.value_embeds) == {"layer0", "layer2"}  # alternating, ending on the last layer
