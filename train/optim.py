"""Muon for the 2-D matrices inside the blocks, AdamW for embeddings, head and scalars (PyTorch).

Which parameter goes where, each group's learning rate, the Newton-Schulz iteration and Muon's
scale are train.architecture's rules, shared with the MLX backend.
"""

from __future__ import annotations

import torch

from train import architecture as arch
from train.config import TrainConfig
from train.model import GPT


def newton_schulz(matrix: torch.Tensor, steps: int = arch.NS_STEPS) -> torch.Tensor:
    """Approximately U V^T of matrix = U S V^T (arch.newton_schulz on torch tensors).

    Singular values end roughly in [0.7, 1.2] (not exactly 1: the iteration trades accuracy for
    speed).
    """
    return arch.newton_schulz(matrix, lambda m: m.norm(), steps)


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
                scale = arch.muon_scale(p.size(0), p.size(1))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * scale)


def build_optimizers(model: GPT, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """[Muon over the 'matrix' group, AdamW over the other groups (arch.ADAMW_GROUPS)].

    Each param group carries `name` (its arch group) and `base_lr`. A parameter that
    train.architecture has no rule for raises KeyError.
    """
    groups = model.grouped_parameters()
    adamw = torch.optim.AdamW(
        [dict(params=groups[g], lr=arch.group_lr(g, config), name=g) for g in arch.ADAMW_GROUPS],
        betas=(config.adam_beta1, config.adam_beta2), eps=arch.ADAM_EPS, weight_decay=0.0,
    )
    (muon_group,) = arch.MUON_GROUPS
    muon = Muon(
        groups[muon_group], lr=arch.group_lr(muon_group, config),
        momentum=config.muon_momentum, weight_decay=config.weight_decay,
    )
    muon.param_groups[0]["name"] = muon_group
    optimizers: list[torch.optim.Optimizer] = [muon, adamw]
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def set_lr_multiplier(optimizers: list[torch.optim.Optimizer], multiplier: float) -> None:
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * multiplier
