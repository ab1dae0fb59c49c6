"""The MLX backend: the same GPT, the same Muon + AdamW split, the same val_bpb (train.evaluate).

Runs on Apple silicon, and on Linux through `mlx[cpu]` (about 20x slower than torch there).
train/model.py (torch) is the reference; this file follows it, reading the same rules from
train.architecture (windows, value-embedding layout, parameter names and shapes, init, groups,
learning rates, constants). Weights are (out, in) as in torch, so they copy across unchanged.
A knob this backend does not implement is refused (ConfigError naming it) when set.
"""

from __future__ import annotations

import functools
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from train import architecture as arch
from train.config import TrainConfig
from train.data import VOCAB_SIZE
from train.flops import cached_peak_flops, flops_per_token, mean_attended_context

# Knobs outside arch.SHARED_KNOBS that this backend implements, or (threads) knowingly ignores:
# `threads` sets torch's CPU thread count and mlx has no such setting. Any other knob is refused.
HANDLED_KNOBS = frozenset({
    "n_layer", "n_embd", "n_head", "mlp_ratio", "seq_len", "value_embeds", "window_pattern",
    "logit_softcap", "matrix_lr", "embedding_lr", "unembedding_lr", "scalar_lr", "weight_decay",
    "adam_beta1", "adam_beta2", "muon_momentum", "seed", "eval_seq_len", "threads",
})


def rms_norm(x: mx.array) -> mx.array:
    return mx.fast.rms_norm(x, None, arch.RMS_NORM_EPS)


@functools.lru_cache(maxsize=8)
def rotary_tables(length: int, head_dim: int) -> tuple[mx.array, mx.array]:
    even = mx.arange(0, head_dim, 2, dtype=mx.float32)
    inverse_frequency = arch.rotary_inverse_frequency(even, head_dim)
    angles = mx.arange(length, dtype=mx.float32)[:, None] * inverse_frequency[None, :]
    return mx.cos(angles), mx.sin(angles)


def apply_rotary(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    return arch.rotate_halves(x, cos, sin, lambda parts: mx.concatenate(parts, axis=-1))


def window_mask(length: int, window: int) -> mx.array | str:
    if arch.full_window(window, length):
        return "causal"
    positions = mx.arange(length)
    return arch.window_keeps(positions[:, None] - positions[None, :], window)


def initial_value(name: str, shape: tuple[int, ...], config: TrainConfig) -> mx.array:
    """A fresh value for parameter `name` as arch.parameter_init says, drawn with its own
    random key (arch.stream_seed of the seed and its name)."""
    init = arch.parameter_init(name, config)
    key = mx.random.key(arch.stream_seed(config.seed, arch.init_stream(name)))
    if init.kind == "normal":
        return init.scale * mx.random.normal(shape, key=key)
    if init.kind == "uniform":
        return mx.random.uniform(-init.scale, init.scale, shape, key=key)
    if init.kind == "zeros":
        return mx.zeros(shape)
    if init.kind == "constant":
        return mx.full(shape, init.scale)
    raise ValueError(f"unknown init kind {init.kind!r}")


def _init_weight(layer: nn.Linear | nn.Embedding, name: str, config: TrainConfig) -> None:
    """Replace a layer's default-initialised weight with the value of its own stream."""
    layer.weight = initial_value(name, layer.weight.shape, config)


class Attention(nn.Module):
    def __init__(self, config: TrainConfig, layer: int):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        prefix = f"blocks.{layer}.attn"
        for key in ("c_q", "c_k", "c_v", "c_proj"):
            _init_weight(getattr(self, key), f"{prefix}.{key}.weight", config)
        if arch.has_value_embedding(layer, config):
            self.ve_lambda = initial_value(f"{prefix}.ve_lambda", (1,), config)

    def __call__(self, x, value_embed, cos, sin, mask):
        batch, length, width = x.shape
        shape = (batch, length, self.n_head, self.head_dim)
        q = self.c_q(x).reshape(shape).transpose(0, 2, 1, 3)
        k = self.c_k(x).reshape(shape).transpose(0, 2, 1, 3)
        v = self.c_v(x)
        if value_embed is not None:
            v = v + self.ve_lambda * value_embed
        v = v.reshape(shape).transpose(0, 2, 1, 3)
        q, k = rms_norm(apply_rotary(q, cos, sin)), rms_norm(apply_rotary(k, cos, sin))
        scale = arch.attention_scale(self.head_dim)
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        return self.c_proj(y.transpose(0, 2, 1, 3).reshape(batch, length, width))


class MLP(nn.Module):
    def __init__(self, config: TrainConfig, layer: int):
        super().__init__()
        hidden = arch.mlp_width(config)
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=False)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=False)
        _init_weight(self.c_fc, f"blocks.{layer}.mlp.c_fc.weight", config)
        _init_weight(self.c_proj, f"blocks.{layer}.mlp.c_proj.weight", config)

    def __call__(self, x):
        return self.c_proj(mx.square(nn.relu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: TrainConfig, layer: int):
        super().__init__()
        self.attn = Attention(config, layer)
        self.mlp = MLP(config, layer)

    def __call__(self, x, value_embed, cos, sin, mask):
        x = x + self.attn(rms_norm(x), value_embed, cos, sin, mask)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.windows = arch.layer_windows(config)
        self.wte = nn.Embedding(VOCAB_SIZE, config.n_embd)
        _init_weight(self.wte, "wte.weight", config)
        self.value_embeds = {
            arch.value_embedding_key(i): nn.Embedding(VOCAB_SIZE, config.n_embd)
            for i in arch.value_embedding_layers(config)
        }
        for key, embedding in self.value_embeds.items():
            _init_weight(embedding, f"value_embeds.{key}.weight", config)
        self.blocks = [Block(config, i) for i in range(config.n_layer)]
        self.resid_lambdas = initial_value("resid_lambdas", (config.n_layer,), config)
        self.x0_lambdas = initial_value("x0_lambdas", (config.n_layer,), config)
        self.lm_head = nn.Linear(config.n_embd, VOCAB_SIZE, bias=False)
        _init_weight(self.lm_head, "lm_head.weight", config)

    def __call__(self, idx: mx.array) -> mx.array:
        length = idx.shape[1]
        cos, sin = (table[None, None] for table in rotary_tables(length, self.config.head_dim))
        masks = {w: window_mask(length, w) for w in set(self.windows)}
        x = x0 = rms_norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            key = arch.value_embedding_key(i)
            value_embed = self.value_embeds[key](idx) if key in self.value_embeds else None
            x = block(x, value_embed, cos, sin, masks[self.windows[i]])
        logits = self.lm_head(rms_norm(x))
        return arch.softcap(logits, self.config.logit_softcap, mx.tanh)


def newton_schulz(matrix: mx.array, steps: int = arch.NS_STEPS) -> mx.array:
    """arch.newton_schulz on mlx arrays (approximate U V^T), as train.optim does on torch."""
    return arch.newton_schulz(matrix, mx.linalg.norm, steps)


class MLXBackend:
    """Model, optimiser state and the two calls the shared loop needs."""

    name = "mlx"

    def __init__(self, config: TrainConfig):
        arch.refuse_unimplemented(config, self.name, HANDLED_KNOBS)
        self.config = config
        mx.random.seed(config.seed)
        self.model = GPT(config)
        params = dict(tree_flatten(self.model.trainable_parameters()))
        self.groups = {name: arch.parameter_group(name) for name in params}
        self.base_lr = {group: arch.group_lr(group, config) for group in arch.GROUPS}
        self.state = {name: [mx.zeros_like(v), mx.zeros_like(v)] for name, v in params.items()}
        self.step_count = 0
        self.num_params = sum(v.size for v in params.values())
        matmul_params = sum(
            v.size for n, v in params.items() if self.groups[n] in arch.MATMUL_GROUPS
        )
        self.flops_per_token = flops_per_token(
            matmul_params, config.n_layer, config.n_embd, mean_attended_context(config)
        )
        self._loss_and_grad = nn.value_and_grad(self.model, self._loss)

    def _loss(self, model, inputs, targets):
        logits = model(inputs)
        return nn.losses.cross_entropy(logits, targets, reduction="mean")

    def _update(self, name: str, param: mx.array, grad: mx.array, multiplier: float) -> mx.array:
        """Muon (the formulas of train.optim.Muon) or AdamW with bias correction, no decay."""
        config, group, state = self.config, self.groups[name], self.state[name]
        lr = self.base_lr[group] * multiplier
        if group in arch.MUON_GROUPS:
            momentum = config.muon_momentum
            buffer = state[0] = momentum * state[0] + (1 - momentum) * grad
            nesterov = (1 - momentum) * grad + momentum * buffer
            scale = arch.muon_scale(param.shape[0], param.shape[1])
            decayed = param * (1 - lr * config.weight_decay)
            return decayed - lr * scale * newton_schulz(nesterov)
        beta1, beta2 = config.adam_beta1, config.adam_beta2
        first = state[0] = beta1 * state[0] + (1 - beta1) * grad
        second = state[1] = beta2 * state[1] + (1 - beta2) * mx.square(grad)
        corrected_first = first / (1 - beta1**self.step_count)
        corrected_second = second / (1 - beta2**self.step_count)
        return param - lr * corrected_first / (mx.sqrt(corrected_second) + arch.ADAM_EPS)

    def train_step(
        self, inputs: np.ndarray, targets: np.ndarray, lr_multiplier: float, inject_nan: bool
    ) -> float:
        loss, grads = self._loss_and_grad(self.model, mx.array(inputs), mx.array(targets))
        if inject_nan:
            loss = loss * float("nan")
        self.step_count += 1
        params = dict(tree_flatten(self.model.trainable_parameters()))
        updated = [
            (name, self._update(name, params[name], grad, lr_multiplier))
            for name, grad in tree_flatten(grads)
        ]
        self.model.update(tree_unflatten(updated))
        mx.eval(self.model.parameters(), [s for pair in self.state.values() for s in pair], loss)
        return float(loss.item())

    def per_token_nats(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        logits = self.model(mx.array(inputs))
        nats = nn.losses.cross_entropy(logits, mx.array(targets), reduction="none")
        return np.array(nats.astype(mx.float32), dtype=np.float64)

    def peak_memory_mb(self) -> float:
        """0.0: mlx on cpu does not track device memory (Metal peak memory is not read here)."""
        return 0.0

    def device_name(self) -> str:
        """The default device's name as MLX reports it ("Apple M2 Max", a CPU's brand), or its
        kind on an MLX too old to say (before mx.device_info)."""
        info = mx.device_info() if hasattr(mx, "device_info") else {}
        return str(info.get("device_name") or mx.default_device())

    def peak_flops(self) -> float:
        """float32 matmul FLOP/s of mlx on its default device (512^3 products for ~0.3 s),
        measured once per machine (train.flops.cached_peak_flops)."""
        return cached_peak_flops(f"mlx {mx.__version__}|{mx.default_device()}|float32",
                                 self._measure_matmul_flops)

    @staticmethod
    def _measure_matmul_flops() -> float:
        size = 512
        a, b = (mx.random.normal((size, size), key=mx.random.key(i)) for i in range(2))
        mx.eval(a @ b)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.3:
            mx.eval(a @ b)
            count += 1
        return 2.0 * size**3 * count / (time.perf_counter() - start)
