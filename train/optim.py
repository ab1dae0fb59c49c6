"""Muon for the 2-D matrices inside the blocks, AdamW for embeddings, head and scalars (PyTorch)."""

from __future__ import annotations

import torch
from torch import nn

from train.config import TrainConfig

# Quintic Newton-Schulz coefficients (Keller Jordan's Muon): fast, approximate orthogonalisation.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U V^T of matrix = U S V^T: X <- aX + (bA + cA^2)X with A = X X^T, from X = M / |M|_F.

    Singular values end roughly in [0.7, 1.2] (not exactly 1: the iteration trades accuracy for speed).
    """
    a, b, c = NS_COEFFICIENTS
    x = matrix / (matrix.norm() + 1e-7)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised, scaled by sqrt(max(1, rows/cols)).

    Update per step: buf <- m*buf + (1-m)*g; u = NS((1-m)*g + m*buf);
    p <- p * (1 - lr * weight_decay) - lr * sqrt(max(1, rows/cols)) * u.
    """

    def __init__(self, params, lr: float, momentum: float, weight_decay: float):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - group["momentum"])
                nesterov = p.grad.lerp(buffer, group["momentum"])
                update = newton_schulz(nesterov.bfloat16() if p.is_cuda else nesterov).to(p.dtype)
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * scale)


def build_optimizers(model: nn.Module, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """[Muon over block matrices, AdamW over embeddings / head / scalars]; each group keeps base_lr."""
    matrices = model.matrix_parameters()
    embeddings = [model.wte.weight, *(e.weight for e in model.value_embeds.values())]
    scalars = [model.resid_lambdas, model.x0_lambdas, *(b.attn.ve_lambda for b in model.blocks if b.attn.ve_lambda is not None)]
    covered = {id(p) for p in [*matrices, *embeddings, *scalars, model.lm_head.weight]}
    missing = [name for name, p in model.named_parameters() if id(p) not in covered]
    if missing:
        raise RuntimeError(f"parameters without an optimizer: {missing}")
    betas = (config.adam_beta1, config.adam_beta2)
    adamw = torch.optim.AdamW(
        [
            dict(params=embeddings, lr=config.embedding_lr),
            dict(params=[model.lm_head.weight], lr=config.unembedding_lr),
            dict(params=scalars, lr=config.scalar_lr),
        ],
        betas=betas, eps=1e-10, weight_decay=0.0,
    )
    muon = Muon(matrices, lr=config.matrix_lr, momentum=config.muon_momentum, weight_decay=config.weight_decay)
    optimizers: list[torch.optim.Optimizer] = [muon, adamw]
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def set_lr_multiplier(optimizers: list[torch.optim.Optimizer], multiplier: float) -> None:
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * multiplier
