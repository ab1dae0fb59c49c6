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


def test_adamw_is_torch_optim_adamw_without_decay():
    """The written-out AdamW against torch.optim.AdamW (weight decay 0) over steps whose lr
    changes, on two groups, one of which has no gradient on some steps."""
    from train.optim import AdamW, set_lr_multiplier

    generator = torch.Generator().manual_seed(1)
    ours = [torch.randn(5, 3, generator=generator), torch.randn(4, generator=generator)]
    theirs = [p.clone() for p in ours]
    groups = lambda params: [dict(params=[params[0]], lr=0.3, name="a"),  # noqa: E731
                             dict(params=[params[1]], lr=0.05, name="b")]
    optimizer = AdamW(groups(ours), betas=(0.8, 0.95), eps=1e-10)
    reference = torch.optim.AdamW(groups(theirs), betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    for g in reference.param_groups:
        g["base_lr"] = g["lr"]
    for step, multiplier in enumerate((1.0, 1.0, 0.5, 0.25, 0.1)):
        grads = [torch.randn(p.shape, generator=generator) for p in ours]
        for params in (ours, theirs):
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            if step in (1, 2):  # the second parameter sits out two steps: its count is its own
                params[1].grad = None
        set_lr_multiplier([optimizer, reference], multiplier)
        optimizer.step()
        reference.step()
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def _plain_muon_update(grad, buffer, lr, momentum, weight_decay, param):
    """The docstring's formula for one matrix, with Keller Jordan's quintic iteration written
    out here, independently of train.architecture."""
    buffer = momentum * buffer + (1 - momentum) * grad
    x = (1 - momentum) * grad + momentum * buffer
    x = x / (x.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(5):
        gram = x @ x.T
        x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
    x = x.T if tall else x
    scale = max(1.0, param.shape[0] / param.shape[1]) ** 0.5
    return param * (1 - lr * weight_decay) - lr * scale * x, buffer


def test_muon_orthogonalises_each_matrix_of_a_stack_on_its_own():
    """Matrices of mixed shapes (several sharing one shape, so stacked) over three steps, against
    the formula applied one matrix at a time."""
    from train.optim import Muon

    generator = torch.Generator().manual_seed(2)
    shapes = [(8, 8), (8, 8), (16, 8), (8, 16), (8, 8)]
    params = [torch.randn(shape, generator=generator) for shape in shapes]
    expected = [p.clone() for p in params]
    buffers = [torch.zeros(shape) for shape in shapes]
    optimizer = Muon(params, lr=0.05, momentum=0.9, weight_decay=0.1, name="matrix")
    for _ in range(3):
        grads = [torch.randn(shape, generator=generator) for shape in shapes]
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
        optimizer.step()
        for i, grad in enumerate(grads):
            expected[i], buffers[i] = _plain_muon_update(
                grad, buffers[i], 0.05, 0.9, 0.1, expected[i])
    for ours, theirs in zip(params, expected):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_a_run_never_imports_torch_dynamo():
    """A whole (tiny) run leaves torch._dynamo unimported: its import costs a run about as much
    as importing torch, and nothing a run does needs it."""
    import subprocess
    import sys

    code = ("import sys; from train.__main__ import main; "
            "main(['--steps', '2', '--n-layer', '1', '--n-embd', '32', '--n-head', '2', "
            "'--seq-len', '32', '--eval-seq-len', '32', '--eval-tokens', '1024', "
            "'--backend', 'cpu', '--threads', '1']); "
            "print('dynamo imported:', 'torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val_bpb:" in result.stdout
    assert result.stdout.strip().endswith("dynamo imported: False")


def test_the_peak_flops_are_measured_once_per_identity(tmp_path, monkeypatch):
    from train.flops import cached_peak_flops

    monkeypatch.setenv("TRAIN_DATA_DIR", str(tmp_path))
    calls = []

    def measure(value):
        calls.append(value)
        return value

    assert cached_peak_flops("cpu|float32|2 threads", lambda: measure(3.0e10)) == 3.0e10
    assert cached_peak_flops("cpu|float32|2 threads", lambda: measure(9.9e10)) == 3.0e10
    assert cached_peak_flops("cpu|float32|1 threads", lambda: measure(1.5e10)) == 1.5e10
    assert calls == [3.0e10, 1.5e10]
