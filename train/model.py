"""The GPT (PyTorch): a miniature of autoresearch's model.

RMSNorm (parameter-free) before attention, MLP and head; rotary position embeddings with q/k
RMS-normalised; ReLU^2 MLP; value embeddings (a second token embedding mixed into the attention
values) on alternating layers, always including the last; per-layer residual and x0 lambdas
(x <- resid * x + x0_lambda * x0, x0 = the normalised token embedding); sliding-window attention
by `window_pattern`; an untied head with a tanh logit softcap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from train.config import TrainConfig
from train.data import VOCAB_SIZE

ROTARY_BASE = 10000.0


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last axis, no learned scale."""
    return F.rms_norm(x, (x.size(-1),))


def layer_windows(config: TrainConfig) -> list[int]:
    """Keys each layer attends to: seq_len // 2 for 'S', the whole context (seq_len) for 'L'.

    The pattern is cycled over layers and the last layer is always full.
    """
    pattern = config.window_pattern
    windows = [config.seq_len // 2 if pattern[i % len(pattern)] == "S" else config.seq_len for i in range(config.n_layer)]
    windows[-1] = config.seq_len
    return windows


def has_value_embedding(layer: int, config: TrainConfig) -> bool:
    """Alternating layers carry value embeddings, counted so that the last layer has one."""
    return config.value_embeds and layer % 2 == (config.n_layer - 1) % 2


def rotary_tables(length: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (length, head_dim // 2): angle = position * base^(-2i / head_dim)."""
    inverse_frequency = ROTARY_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inverse_frequency)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of the head dimension of x (B, H, T, D) by position-dependent angles."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1).type_as(x)


def window_mask(length: int, window: int, device: torch.device) -> torch.Tensor | None:
    """Boolean (T, T) mask allowing key j for query i when 0 <= i - j < window; None = plain causal."""
    if window >= length:
        return None
    distance = torch.arange(length, device=device)[:, None] - torch.arange(length, device=device)[None, :]
    return (distance >= 0) & (distance < window)


class Attention(nn.Module):
    def __init__(self, config: TrainConfig, value_embedding: bool):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        # how much of the value embedding enters the values; a scalar, trained with scalar_lr
        self.ve_lambda = nn.Parameter(torch.ones(1)) if value_embedding else None

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
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    def __init__(self, config: TrainConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config: TrainConfig, value_embedding: bool):
        super().__init__()
        self.attn = Attention(config, value_embedding)
        self.mlp = MLP(config)

    def forward(self, x, value_embed, cos, sin, mask):
        x = x + self.attn(rms_norm(x), value_embed, cos, sin, mask)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.windows = layer_windows(config)
        self.wte = nn.Embedding(VOCAB_SIZE, config.n_embd)
        self.value_embeds = nn.ModuleDict(
            {f"layer{i}": nn.Embedding(VOCAB_SIZE, config.n_embd) for i in range(config.n_layer) if has_value_embedding(i, config)}
        )
        self.blocks = nn.ModuleList(Block(config, has_value_embedding(i, config)) for i in range(config.n_layer))
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.full((config.n_layer,), 0.1))
        self.lm_head = nn.Linear(config.n_embd, VOCAB_SIZE, bias=False)
        cos, sin = rotary_tables(max(config.seq_len, config.eval_seq_len), config.head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """autoresearch's init: unit embeddings, tiny head, uniform inputs, zero output projections."""
        bound = math.sqrt(3.0) / math.sqrt(self.config.n_embd)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for embedding in self.value_embeds.values():
            nn.init.uniform_(embedding.weight, -bound, bound)
        for block in self.blocks:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def matrix_parameters(self) -> list[nn.Parameter]:
        """The 2-D weights inside the blocks (Muon's share)."""
        return [p for p in self.blocks.parameters() if p.ndim == 2]

    def matmul_parameter_count(self) -> int:
        """Weights used in matmuls: block matrices and the head (embeddings are lookups)."""
        return sum(p.numel() for p in self.matrix_parameters()) + self.lm_head.weight.numel()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, VOCAB_SIZE) in float32 for token ids idx (B, T)."""
        length = idx.size(1)
        cos = self.cos[:length].to(idx.device)[None, None]
        sin = self.sin[:length].to(idx.device)[None, None]
        masks = {w: window_mask(length, w, idx.device) for w in set(self.windows)}
        x = x0 = rms_norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            value_embed = self.value_embeds[f"layer{i}"](idx) if f"layer{i}" in self.value_embeds else None
            x = block(x, value_embed, cos, sin, masks[self.windows[i]])
        logits = self.lm_head(rms_norm(x)).float()
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap > 0 else logits
