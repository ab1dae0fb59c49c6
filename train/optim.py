"""Muon for the 2-D matrices inside the blocks, AdamW for embeddings, head and scalars (PyTorch).

Which parameter goes where, each group's learning rate, the Newton-Schulz iteration and Muon's
scale are train.architecture's rules, shared with the MLX backend.

Both optimisers are written out here rather than built on `torch.optim.Optimizer`, whose
wrappers import `torch._dynamo` on first use: in a fresh process that import costs about as
much as importing torch itself, on every run. Each keeps torch's bookkeeping shape
(`param_groups`, a list of dicts with `params`, `lr`, `name` and `base_lr`).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from train import architecture as arch
from train.config import TrainConfig
from train.model import GPT


def newton_schulz(matrix: torch.Tensor, steps: int = arch.NS_STEPS) -> torch.Tensor:
    """Approximately U V^T of each matrix = U S V^T (arch.newton_schulz on torch tensors), over
    the last two axes, so a stack (n, rows, cols) is orthogonalised matrix by matrix.

    Singular values end roughly in [0.7, 1.2] (not exactly 1: the iteration trades accuracy for
    speed).
    """
    return arch.newton_schulz(
        matrix, lambda m: torch.linalg.matrix_norm(m, keepdim=True), steps, lambda m: m.mT
    )


def _group(params: list[torch.nn.Parameter], lr: float, name: str) -> dict:
    return dict(params=list(params), lr=lr, base_lr=lr, name=name)


class Muon:
    """SGD with Nesterov momentum whose update is orthogonalised, scaled by sqrt(max(1, rows/cols)).

    Update per step: buf <- m*buf + (1-m)*g; u = NS((1-m)*g + m*buf);
    p <- p * (1 - lr * weight_decay) - lr * sqrt(max(1, rows/cols)) * u.

    Matrices of one shape are orthogonalised together as one stack (one batched matmul per
    Newton-Schulz product instead of one per matrix).

    Args:
        params: the matrices.
        lr: base learning rate (the schedule multiplies `param_groups[0]["lr"]`).
        momentum: m.
        weight_decay: decoupled, scaled by the current lr.
        name: the group's name in `param_groups`.
    """

    def __init__(self, params, lr: float, momentum: float, weight_decay: float, name: str):
        self.param_groups = [_group(params, lr, name)]
        self.momentum, self.weight_decay = momentum, weight_decay
        self.state: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        (group,) = self.param_groups
        by_shape: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            if p not in self.state:
                self.state[p] = torch.zeros_like(p)
            buffer = self.state[p]
            buffer.lerp_(p.grad, 1 - self.momentum)
            by_shape[tuple(p.shape)].append((p, p.grad.lerp(buffer, self.momentum)))
        lr = group["lr"]
        for (rows, cols), pairs in by_shape.items():
            stack = torch.stack([nesterov for _, nesterov in pairs])
            updates = newton_schulz(stack.bfloat16() if stack.is_cuda else stack)
            scale = arch.muon_scale(rows, cols)
            for (p, _), update in zip(pairs, updates):
                p.mul_(1 - lr * self.weight_decay)
                p.add_(update.to(p.dtype), alpha=-lr * scale)


class AdamW:
    """Adam with bias correction, no weight decay (the groups it updates take none).

    Update at a parameter's t-th step with a gradient: m <- b1*m + (1-b1)*g;
    v <- b2*v + (1-b2)*g^2; p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps),
    the arithmetic of `torch.optim.AdamW`'s single-tensor update in the same order (t counted
    per parameter, as torch does, so a step without its gradient does not count).

    Args:
        groups: dicts with `params`, `lr` and `name`.
        betas: (b1, b2).
        eps: added to the bias-corrected root second moment.
    """

    def __init__(self, groups: list[dict], betas: tuple[float, float], eps: float):
        self.param_groups = [_group(g["params"], g["lr"], g["name"]) for g in groups]
        self.betas, self.eps = betas, eps
        self.state: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor, int]] = {}

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                first, second, steps = self.state.get(
                    p, (torch.zeros_like(p), torch.zeros_like(p), 0))
                steps += 1
                self.state[p] = (first, second, steps)
                first.lerp_(p.grad, 1 - beta1)
                second.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                bias_correction2_sqrt = (1 - beta2**steps) ** 0.5
                denominator = (second.sqrt() / bias_correction2_sqrt).add_(self.eps)
                p.addcdiv_(first, denominator, value=-group["lr"] / (1 - beta1**steps))


Optimizer = Muon | AdamW


def build_optimizers(model: GPT, config: TrainConfig) -> list[Optimizer]:
    """[Muon over the 'matrix' group, AdamW over the other groups (arch.ADAMW_GROUPS)].

    Each param group carries `name` (its arch group) and `base_lr`. A parameter that
    train.architecture has no rule for raises KeyError.
    """
    groups = model.grouped_parameters()
    (muon_group,) = arch.MUON_GROUPS
    muon = Muon(
        groups[muon_group], lr=arch.group_lr(muon_group, config),
        momentum=config.muon_momentum, weight_decay=config.weight_decay, name=muon_group,
    )
    adamw = AdamW(
        [dict(params=groups[g], lr=arch.group_lr(g, config), name=g) for g in arch.ADAMW_GROUPS],
        betas=(config.adam_beta1, config.adam_beta2), eps=arch.ADAM_EPS,
    )
    return [muon, adamw]


def set_lr_multiplier(optimizers: list[Optimizer], multiplier: float) -> None:
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * multiplier
