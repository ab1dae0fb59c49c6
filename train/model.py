"""The GPT (PyTorch), the reference: a miniature of autoresearch's model.

RMSNorm (parameter-free) before attention, MLP and head; rotary position embeddings with q/k
RMS-normalised; ReLU^2 MLP; value embeddings (a second token embedding mixed into the attention
values) on alternating layers, always including the last; per-layer residual and x0 lambdas
(x <- resid * x + x0_lambda * x0, x0 = the normalised token embedding); sliding-window attention
by `window_pattern`; an untied head with a tanh logit softcap.

The rules (windows, value-embedding layout, parameter names and shapes, init, optimiser groups,
constants) come from train.architecture, which train/mlx_backend.py reads too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train import architecture as arch
from train.config import TrainConfig
from train.data import VOCAB_SIZE


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last axis, no learned scale (eps: arch.RMS_NORM_EPS,
    torch's default for float32)."""
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(length: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (length, head_dim // 2): angle = position * base^(-2i / head_dim)."""
    even = torch.arange(0, head_dim, 2, dtype=torch.float32)
    inverse_frequency = arch.rotary_inverse_frequency(even, head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inverse_frequency)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of the head dimension of x (B, H, T, D) by position (arch rule)."""
    return arch.rotate_halves(x, cos, sin, lambda parts: torch.cat(parts, dim=-1)).type_as(x)


def window_mask(length: int, window: int, device: torch.device) -> torch.Tensor | None:
    """Boolean (T, T) mask allowing key j for query i when 0 <= i - j < window; None = causal."""
    if arch.full_window(window, length):
        return None
    positions = torch.arange(length, device=device)
    return arch.window_keeps(positions[:, None] - positions[None, :], window)


class Attention(nn.Module):
    def __init__(self, config: TrainConfig, value_embedding: bool):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        # how much of the value embedding enters the values; a scalar, trained with scalar_lr
        self.ve_lambda = nn.Parameter(torch.empty(1)) if value_embedding else None

    def forward(self, x, value_embed, cos, sin, mask):
        batch, length, width = x.shape
        shape = (batch, length, self.n_head, self.head_dim)
        q = self.c_q(x).view(shape).transpose(1, 2)
        k = self.c_k(x).view(shape).transpose(1, 2)
        v = self.c_v(x)
        if value_embed is not None:
            v = v + self.ve_lambda * value_embed
        v = v.view(shape).transpose(1, 2)
        q, k = rms_norm(apply_rotary(q, cos, sin)), rms_norm(apply_rotary(k, cos, sin))
        scale = arch.attention_scale(self.head_dim)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return self.c_proj(y.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    def __init__(self, config: TrainConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, arch.mlp_width(config), bias=False)
        self.c_proj = nn.Linear(arch.mlp_width(config), config.n_embd, bias=False)

    def forward(self, x):
        # in place: the matmul's output is not saved for its backward, so it may be overwritten
        return self.c_proj(F.relu(self.c_fc(x), inplace=True).square())


class Block(nn.Module):
    def __init__(self, config: TrainConfig, value_embedding: bool):
        super().__init__()
        self.attn = Attention(config, value_embedding)
        self.mlp = MLP(config)

    def forward(self, x, value_embed, cos, sin, mask):
        x = x + self.attn(rms_norm(x), value_embed, cos, sin, mask)
        return x + self.mlp(rms_norm(x))


def init_parameter_(parameter: torch.Tensor, init: arch.Init, generator: torch.Generator) -> None:
    """Fill a parameter in place as `init` says (normal and uniform draw from `generator`)."""
    if init.kind == "normal":
        nn.init.normal_(parameter, std=init.scale, generator=generator)
    elif init.kind == "uniform":
        nn.init.uniform_(parameter, -init.scale, init.scale, generator=generator)
    elif init.kind == "zeros":
        nn.init.zeros_(parameter)
    elif init.kind == "constant":
        nn.init.constant_(parameter, init.scale)
    else:
        raise ValueError(f"unknown init kind {init.kind!r}")


class GPT(nn.Module):
    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.windows = arch.layer_windows(config)
        self.wte = nn.Embedding(VOCAB_SIZE, config.n_embd)
        self.value_embeds = nn.ModuleDict({
            arch.value_embedding_key(i): nn.Embedding(VOCAB_SIZE, config.n_embd)
            for i in arch.value_embedding_layers(config)
        })
        self.blocks = nn.ModuleList(
            Block(config, arch.has_value_embedding(i, config)) for i in range(config.n_layer)
        )
        self.resid_lambdas = nn.Parameter(torch.empty(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.empty(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, VOCAB_SIZE, bias=False)
        cos, sin = rotary_tables(max(config.seq_len, config.eval_seq_len), config.head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Every parameter as arch.parameter_init says, each from its own random stream (keyed
        by the seed and its name: arch.stream_seed), so a parameter's initial values do not
        depend on which other modules the config has."""
        for name, parameter in self.named_parameters():
            generator = torch.Generator(device=parameter.device)
            generator.manual_seed(arch.stream_seed(self.config.seed, arch.init_stream(name)))
            init_parameter_(parameter, arch.parameter_init(name, self.config), generator)

    def grouped_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimiser group (arch.GROUPS), in registration order."""
        groups: dict[str, list[nn.Parameter]] = {group: [] for group in arch.GROUPS}
        for name, parameter in self.named_parameters():
            groups[arch.parameter_group(name)].append(parameter)
        return groups

    def matrix_parameters(self) -> list[nn.Parameter]:
        """The 2-D weights inside the blocks (Muon's share)."""
        return self.grouped_parameters()["matrix"]

    def matmul_parameter_count(self) -> int:
        """Weights used in matmuls: block matrices and the head (embeddings are lookups)."""
        groups = self.grouped_parameters()
        return sum(p.numel() for group in arch.MATMUL_GROUPS for p in groups[group])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, VOCAB_SIZE) in float32 for token ids idx (B, T)."""
        length = idx.size(1)
        cos = self.cos[:length].to(idx.device)[None, None]
        sin = self.sin[:length].to(idx.device)[None, None]
        masks = {w: window_mask(length, w, idx.device) for w in set(self.windows)}
        x = x0 = rms_norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            key = arch.value_embedding_key(i)
            value_embed = self.value_embeds[key](idx) if key in self.value_embeds else None
            x = block(x, value_embed, cos, sin, masks[self.windows[i]])
        logits = self.lm_head(rms_norm(x)).float()
        return arch.softcap(logits, self.config.logit_softcap, torch.tanh)
