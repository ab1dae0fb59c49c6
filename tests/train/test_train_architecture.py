"""train.architecture against independent evidence: hand-worked cases, and the parameters the torch
and MLX models really build (names, shapes, initial statistics, optimiser groups)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from train import architecture as arch
from train.config import ConfigError, TrainConfig
from train.data import VOCAB_SIZE
from train.model import GPT
from train.optim import build_optimizers
from train.torch_backend import TorchBackend

from .conftest import REPO

# n_embd 64 gives 16k samples per embedding and 4k per attention matrix, enough for 5% std checks
STATS = dict(n_layer=3, n_embd=64, n_head=2, seq_len=16, eval_seq_len=16, threads=1)


@pytest.mark.parametrize(
    "n_layer, pattern, expected",
    [
        (5, "SSL", [32, 32, 64, 32, 64]),  # cycled S S L | S then the last forced to L
        (4, "SSSL", [32, 32, 32, 64]),
        (3, "L", [64, 64, 64]),
        (3, "S", [32, 32, 64]),
        (1, "S", [64]),
        (4, "LS", [64, 32, 64, 64]),
    ],
)
def test_window_rule_hand_worked(n_layer, pattern, expected):
    config = TrainConfig(n_layer=n_layer, seq_len=64, window_pattern=pattern)
    assert arch.layer_windows(config) == expected


def test_window_mask_rule_hand_worked():
    distance = np.arange(4)[:, None] - np.arange(4)[None, :]
    allowed = arch.window_keeps(distance, 2)
    assert allowed.astype(int).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert arch.full_window(4, 4) and not arch.full_window(3, 4)


@pytest.mark.parametrize(
    "n_layer, value_embeds, layers", [(1, True, [0]), (3, True, [0, 2]), (4, True, [1, 3]),
                                      (4, False, [])],
)
def test_value_embeddings_alternate_ending_on_the_last_layer(n_layer, value_embeds, layers):
    config = TrainConfig(n_layer=n_layer, value_embeds=value_embeds)
    assert arch.value_embedding_layers(config) == layers


def test_hand_worked_constants_and_scales():
    config = TrainConfig(n_embd=64, matrix_lr=0.1, embedding_lr=0.2, unembedding_lr=0.3,
                         scalar_lr=0.4)
    assert arch.input_bound(config) == pytest.approx(math.sqrt(3 / 64))  # std 1/8
    assert arch.parameter_init("wte.weight", config) == arch.Init("normal", 1.0)
    assert arch.parameter_init("lm_head.weight", config) == arch.Init("normal", 0.001)
    assert arch.parameter_init("blocks.7.mlp.c_proj.weight", config) == arch.Init("zeros")
    assert arch.parameter_init("x0_lambdas", config) == arch.Init("constant", 0.1)
    lrs = [arch.group_lr(group, config) for group in arch.GROUPS]
    assert lrs == [0.1, 0.2, 0.3, 0.4]
    assert arch.muon_scale(128, 32) == 2.0 and arch.muon_scale(32, 128) == 1.0
    assert arch.RMS_NORM_EPS == float(np.finfo(np.float32).eps)
    assert arch.attention_scale(16) == 0.25


def test_unknown_parameters_have_no_rule():
    with pytest.raises(KeyError, match="blocks.0.attn.gate"):
        arch.parameter_group("blocks.0.attn.gate")
    with pytest.raises(KeyError, match="bias"):
        arch.parameter_init("lm_head.bias", TrainConfig())


def _hand_layout(config: TrainConfig) -> dict[str, tuple[int, ...]]:
    """The parameter table written out by hand for n_layer=2 (value embedding on layer 1)."""
    width, hidden = config.n_embd, 4 * config.n_embd
    square = (width, width)
    layer = {"attn.c_q.weight": square, "attn.c_k.weight": square, "attn.c_v.weight": square,
             "attn.c_proj.weight": square, "mlp.c_fc.weight": (hidden, width),
             "mlp.c_proj.weight": (width, hidden)}
    shapes = {"wte.weight": (VOCAB_SIZE, width), "value_embeds.layer1.weight": (VOCAB_SIZE, width)}
    shapes |= {f"blocks.0.{k}": v for k, v in layer.items()}
    shapes |= {f"blocks.1.{k}": v for k, v in layer.items()} | {"blocks.1.attn.ve_lambda": (1,)}
    shapes |= {"resid_lambdas": (2,), "x0_lambdas": (2,), "lm_head.weight": (VOCAB_SIZE, width)}
    return shapes


def test_layout_matches_hand_table_and_both_models():
    from mlx.utils import tree_flatten

    from train.mlx_backend import GPT as MLXGPT

    config = TrainConfig(n_layer=2, n_embd=32, n_head=2, seq_len=16, eval_seq_len=16)
    assert arch.parameter_shapes(config) == _hand_layout(config)
    torch_shapes = {n: tuple(p.shape) for n, p in GPT(config).named_parameters()}
    assert torch_shapes == arch.parameter_shapes(config)
    mlx_shapes = {n: tuple(v.shape) for n, v in tree_flatten(MLXGPT(config).parameters())}
    assert mlx_shapes == arch.parameter_shapes(config)


def _check_init(name: str, value: np.ndarray, init: arch.Init) -> None:
    """Does `value` look drawn / filled as `init` says?"""
    if init.kind == "zeros":
        assert np.all(value == 0), name
    elif init.kind == "constant":
        assert np.all(value == np.float32(init.scale)), name
    elif init.kind == "uniform":
        assert np.abs(value).max() <= init.scale, name
        assert np.abs(value).max() > 0.95 * init.scale, name  # fills its range
        assert value.std() == pytest.approx(init.scale / math.sqrt(3), rel=0.05), name
        assert abs(value.mean()) < 0.05 * init.scale, name
    elif init.kind == "normal":
        assert value.std() == pytest.approx(init.scale, rel=0.05), name
        assert abs(value.mean()) < 0.05 * init.scale, name
        assert np.abs(value).max() > 2.5 * init.scale, name  # tails: not a uniform
    else:
        raise AssertionError(f"{name}: unknown init {init}")


def test_torch_parameters_start_as_the_module_says():
    config = TrainConfig(**STATS)
    torch.manual_seed(0)
    named = dict(GPT(config).named_parameters())
    assert set(named) == set(arch.parameter_shapes(config))
    for name, parameter in named.items():
        _check_init(name, parameter.detach().numpy(), arch.parameter_init(name, config))


def test_mlx_parameters_start_as_the_module_says():
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from train.mlx_backend import GPT as MLXGPT

    config = TrainConfig(**STATS)
    mx.random.seed(0)
    named = dict(tree_flatten(MLXGPT(config).parameters()))
    assert set(named) == set(arch.parameter_shapes(config))
    for name, value in named.items():
        _check_init(name, np.array(value), arch.parameter_init(name, config))


def test_hand_worked_groups_on_both_backends():
    from train.mlx_backend import MLXBackend

    config = TrainConfig(n_layer=2, n_embd=32, n_head=2, seq_len=16, eval_seq_len=16,
                         matrix_lr=0.1, embedding_lr=0.2, unembedding_lr=0.3, scalar_lr=0.4)
    per_layer = ["attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.c_proj.weight",
                 "mlp.c_fc.weight", "mlp.c_proj.weight"]
    expected = {
        "matrix": {f"blocks.{i}.{name}" for i in range(2) for name in per_layer},
        "embedding": {"wte.weight", "value_embeds.layer1.weight"},
        "unembedding": {"lm_head.weight"},
        "scalar": {"resid_lambdas", "x0_lambdas", "blocks.1.attn.ve_lambda"},
    }
    lrs = {"matrix": 0.1, "embedding": 0.2, "unembedding": 0.3, "scalar": 0.4}
    model = GPT(config)
    names = {id(p): n for n, p in model.named_parameters()}
    optimizers = build_optimizers(model, config)
    found = {g["name"]: ({names[id(p)] for p in g["params"]}, g["lr"], type(o).__name__)
             for o in optimizers for g in o.param_groups}
    assert found == {g: (expected[g], lrs[g], "Muon" if g == "matrix" else "AdamW")
                     for g in expected}
    assert optimizers[1].eps == 1e-10
    backend = MLXBackend(config)
    mlx_groups = {g: {n for n, group in backend.groups.items() if group == g} for g in expected}
    assert mlx_groups == expected and backend.base_lr == lrs


def test_both_backends_count_the_same_params_and_flops():
    from train.mlx_backend import MLXBackend

    config = TrainConfig(n_layer=3, n_embd=32, n_head=2, seq_len=32, eval_seq_len=32, threads=1)
    torch_backend, mlx_backend = TorchBackend(config, "cpu"), MLXBackend(config)
    expected = sum(math.prod(shape) for shape in arch.parameter_shapes(config).values())
    assert torch_backend.num_params == mlx_backend.num_params == expected
    assert torch_backend.flops_per_token == mlx_backend.flops_per_token


def test_newton_schulz_is_one_definition_on_both_backends():
    import mlx.core as mx

    from train.mlx_backend import newton_schulz as mlx_newton_schulz
    from train.optim import newton_schulz as torch_newton_schulz

    matrix = np.random.default_rng(0).standard_normal((24, 40)).astype(np.float32)
    for m in (matrix, matrix.T.copy()):
        via_torch = torch_newton_schulz(torch.from_numpy(m)).numpy()
        via_mlx = np.array(mlx_newton_schulz(mx.array(m)))
        assert via_torch.shape == m.shape
        assert np.abs(via_torch - via_mlx).max() < 1e-4


def test_a_knob_a_backend_lacks_is_refused_by_name():
    lacking = frozenset(arch.backend_knobs()) - {"logit_softcap"}
    arch.refuse_unimplemented(TrainConfig(), "mlx", lacking)  # at its default: fine
    with pytest.raises(ConfigError, match=r"'logit_softcap': 3\.0 .*mlx backend does not"):
        arch.refuse_unimplemented(TrainConfig(logit_softcap=3.0), "mlx", lacking)


def test_mlx_handles_every_backend_knob_today():
    from train.mlx_backend import HANDLED_KNOBS

    assert set(arch.backend_knobs()) <= HANDLED_KNOBS
    assert arch.SHARED_KNOBS <= {f for f in TrainConfig.__dataclass_fields__}


def test_the_mlx_backend_does_not_import_torch():
    code = "import sys, train.mlx_backend; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_the_shared_module_imports_neither_torch_nor_mlx():
    code = "import sys, train.architecture; print(sorted({'torch', 'mlx'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr
