"""The MLX backend: the same GPT, the same Muon + AdamW split, the same val_bpb (train.evaluate).

Runs on Apple silicon, and on Linux through `mlx[cpu]` (about 20x slower than torch there).
Mirrors train/model.py and train/optim.py layer for layer; weights are (out, in) as in torch.
"""

from __future__ import annotations

import functools
import math
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from train.config import TrainConfig
from train.data import VOCAB_SIZE
from train.flops import flops_per_token, mean_attended_context
from train.model import ROTARY_BASE, has_value_embedding, layer_windows
from train.optim import NS_COEFFICIENTS

RMS_EPS = float(np.finfo(np.float32).eps)  # torch's F.rms_norm default for float32



def rms_norm(x: mx.array) -> mx.array:
    return mx.fast.rms_norm(x, None, RMS_EPS)


@functools.lru_cache(maxsize=8)
def rotary_tables(length: int, head_dim: int) -> tuple[mx.array, mx.array]:
    inverse_frequency = ROTARY_BASE ** (-mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim)
    angles = mx.arange(length, dtype=mx.float32)[:, None] * inverse_frequency[None, :]
    return mx.cos(angles), mx.sin(angles)


def apply_rotary(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return mx.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1)


def window_mask(length: int, window: int) -> mx.array | str:
    if window >= length:
        return "causal"
    distance = mx.arange(length)[:, None] - mx.arange(length)[None, :]
    return (distance >= 0) & (distance < window)


def _uniform(shape: tuple[int, ...], bound: float) -> mx.array:
    return mx.random.uniform(-bound, bound, shape)


class Attention(nn.Module):
    def __init__(self, config: TrainConfig, value_embedding: bool):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        bound = math.sqrt(3.0) / math.sqrt(config.n_embd)
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        for linear in (self.c_q, self.c_k, self.c_v):
            linear.weight = _uniform(linear.weight.shape, bound)
        self.c_proj.weight = mx.zeros_like(self.c_proj.weight)
        if value_embedding:
            self.ve_lambda = mx.ones((1,))

    def __call__(self, x, value_embed, cos, sin, mask):
        batch, length, width = x.shape
        q = self.c_q(x).reshape(batch, length, self.n_head, self.head_dim).transpose(0, 2, 1, 3)
        k = self.c_k(x).reshape(batch, length, self.n_head, self.head_dim).transpose(0, 2, 1, 3)
        v = self.c_v(x)
        if value_embed is not None:
            v = v + self.ve_lambda * value_embed
        v = v.reshape(batch, length, self.n_head, self.head_dim).transpose(0, 2, 1, 3)
        q, k = rms_norm(apply_rotary(q, cos, sin)), rms_norm(apply_rotary(k, cos, sin))
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(self.head_dim), mask=mask)
        return self.c_proj(y.transpose(0, 2, 1, 3).reshape(batch, length, width))


class MLP(nn.Module):
    def __init__(self, config: TrainConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=False)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=False)
        self.c_fc.weight = _uniform(self.c_fc.weight.shape, math.sqrt(3.0) / math.sqrt(config.n_embd))
        self.c_proj.weight = mx.zeros_like(self.c_proj.weight)

    def __call__(self, x):
        return self.c_proj(mx.square(nn.relu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: TrainConfig, value_embedding: bool):
        super().__init__()
        self.attn = Attention(config, value_embedding)
        self.mlp = MLP(config)

    def __call__(self, x, value_embed, cos, sin, mask):
        x = x + self.attn(rms_norm(x), value_embed, cos, sin, mask)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.windows = layer_windows(config)
        bound = math.sqrt(3.0) / math.sqrt(config.n_embd)
        self.wte = nn.Embedding(VOCAB_SIZE, config.n_embd)
        self.wte.weight = mx.random.normal((VOCAB_SIZE, config.n_embd))
        self.value_embeds = {
            f"layer{i}": nn.Embedding(VOCAB_SIZE, config.n_embd) for i in range(config.n_layer) if has_value_embedding(i, config)
        }
        for embedding in self.value_embeds.values():
            embedding.weight = _uniform(embedding.weight.shape, bound)
        self.blocks = [Block(config, has_value_embedding(i, config)) for i in range(config.n_layer)]
        self.resid_lambdas = mx.ones((config.n_layer,))
        self.x0_lambdas = mx.full((config.n_layer,), 0.1)
        self.lm_head = nn.Linear(config.n_embd, VOCAB_SIZE, bias=False)
        self.lm_head.weight = 0.001 * mx.random.normal((VOCAB_SIZE, config.n_embd))

    def __call__(self, idx: mx.array) -> mx.array:
        length = idx.shape[1]
        cos, sin = (table[None, None] for table in rotary_tables(length, self.config.head_dim))
        masks = {w: window_mask(length, w) for w in set(self.windows)}
        x = x0 = rms_norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            value_embed = self.value_embeds[f"layer{i}"](idx) if f"layer{i}" in self.value_embeds else None
            x = block(x, value_embed, cos, sin, masks[self.windows[i]])
        logits = self.lm_head(rms_norm(x))
        cap = self.config.logit_softcap
        return cap * mx.tanh(logits / cap) if cap > 0 else logits


def newton_schulz(matrix: mx.array, steps: int = 5) -> mx.array:
    """MLX twin of train.optim.newton_schulz (approximate U V^T)."""
    a, b, c = NS_COEFFICIENTS
    x = matrix / (mx.linalg.norm(matrix) + 1e-7)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def parameter_group(name: str, value: mx.array) -> str:
    """Which optimiser setting a parameter uses: matrix (Muon), embedding, unembedding or scalar."""
    if name.startswith("blocks.") and value.ndim == 2:
        return "matrix"
    if name.startswith(("wte.", "value_embeds.")):
        return "embedding"
    if name.startswith("lm_head."):
        return "unembedding"
    return "scalar"


class MLXBackend:
    """Model, optimiser state and the two calls the shared loop needs."""

    name = "mlx"

    def __init__(self, config: TrainConfig):
        self.config = config
        mx.random.seed(config.seed)
        self.model = GPT(config)
        params = dict(tree_flatten(self.model.trainable_parameters()))
        self.groups = {name: parameter_group(name, value) for name, value in params.items()}
        self.base_lr = {
            "matrix": config.matrix_lr, "embedding": config.embedding_lr,
            "unembedding": config.unembedding_lr, "scalar": config.scalar_lr,
        }
        self.state = {name: [mx.zeros_like(v), mx.zeros_like(v)] for name, v in params.items()}
        self.step_count = 0
        self.num_params = sum(v.size for v in params.values())
        matmul_params = sum(v.size for n, v in params.items() if self.groups[n] in ("matrix", "unembedding"))
        self.flops_per_token = flops_per_token(matmul_params, config.n_layer, config.n_embd, mean_attended_context(config))
        self._loss_and_grad = nn.value_and_grad(self.model, self._loss)

    def _loss(self, model, inputs, targets):
        logits = model(inputs)
        return nn.losses.cross_entropy(logits, targets, reduction="mean")

    def _update(self, name: str, param: mx.array, grad: mx.array, multiplier: float) -> mx.array:
        config, group = self.config, self.groups[name]
        lr = self.base_lr[group] * multiplier
        if group == "matrix":
            buffer = self.state[name][0] = config.muon_momentum * self.state[name][0] + (1 - config.muon_momentum) * grad
            nesterov = (1 - config.muon_momentum) * grad + config.muon_momentum * buffer
            scale = max(1.0, param.shape[0] / param.shape[1]) ** 0.5
            return param * (1 - lr * config.weight_decay) - lr * scale * newton_schulz(nesterov)
        beta1, beta2 = config.adam_beta1, config.adam_beta2
        first = self.state[name][0] = beta1 * self.state[name][0] + (1 - beta1) * grad
        second = self.state[name][1] = beta2 * self.state[name][1] + (1 - beta2) * mx.square(grad)
        corrected_first = first / (1 - beta1**self.step_count)
        corrected_second = second / (1 - beta2**self.step_count)
        return param - lr * corrected_first / (mx.sqrt(corrected_second) + 1e-10)

    def train_step(self, inputs: np.ndarray, targets: np.ndarray, lr_multiplier: float, inject_nan: bool) -> float:
        loss, grads = self._loss_and_grad(self.model, mx.array(inputs), mx.array(targets))
        if inject_nan:
            loss = loss * float("nan")
        self.step_count += 1
        params = dict(tree_flatten(self.model.trainable_parameters()))
        updated = [(name, self._update(name, params[name], grad, lr_multiplier)) for name, grad in tree_flatten(grads)]
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

    def peak_flops(self) -> float:
        """Measured float32 matmul FLOP/s of mlx on its default device (512^3 products, ~0.3 s)."""
        size = 512
        a, b = mx.random.normal((size, size)), mx.random.normal((size, size))
        mx.eval(a @ b)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.3:
            mx.eval(a @ b)
            count += 1
        return 2.0 * size**3 * count / (time.perf_counter() - start)
