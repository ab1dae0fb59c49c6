"""The PyTorch backend: cuda (bf16 autocast, SDPA), mps and cpu (fp32)."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F

from train.config import ConfigError, TrainConfig
from train.data import VOCAB_SIZE
from train.flops import (
    cached_peak_flops,
    flops_per_token,
    mean_attended_context,
    measure_matmul_flops,
)
from train.model import GPT
from train.optim import build_optimizers, set_lr_multiplier


def resolve_device(requested: str) -> str:
    """'auto' -> cuda > mps > cpu; an explicit device that is absent is a ConfigError."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if requested == "auto":
        return next(device for device in ("cuda", "mps", "cpu") if available[device])
    if not available[requested]:
        raise ConfigError(
            f"bad value for 'backend': {requested!r} (no {requested} device on this machine)"
        )
    return requested


class TorchBackend:
    def __init__(self, config: TrainConfig, device: str):
        self.config, self.name = config, device
        if device == "cpu":
            torch.set_num_threads(config.threads or os.cpu_count() or 1)
        torch.manual_seed(config.seed)
        self.model = GPT(config).to(device)
        self.optimizers = build_optimizers(self.model, config)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.flops_per_token = flops_per_token(
            self.model.matmul_parameter_count(), config.n_layer, config.n_embd,
            mean_attended_context(config),
        )
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.cuda.reset_peak_memory_stats()

    def _autocast(self):
        if self.name == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.name, non_blocking=True)

    def train_step(
        self, inputs: np.ndarray, targets: np.ndarray, lr_multiplier: float, inject_nan: bool
    ) -> float:
        """One optimiser step on a batch; returns the mean training loss in nats per token."""
        self.model.train()
        with self._autocast():
            logits = self.model(self._tensor(inputs))
        loss = F.cross_entropy(logits.view(-1, VOCAB_SIZE), self._tensor(targets).view(-1))
        if inject_nan:
            loss = loss * float("nan")
        loss.backward()
        set_lr_multiplier(self.optimizers, lr_multiplier)
        for optimizer in self.optimizers:
            optimizer.step()
        self.model.zero_grad(set_to_none=True)
        return float(loss.item())

    @torch.no_grad()
    def per_token_nats(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Cross-entropy of each target in nats, shape of targets, float64."""
        self.model.eval()
        with self._autocast():
            logits = self.model(self._tensor(inputs))
        nats = F.cross_entropy(
            logits.view(-1, VOCAB_SIZE), self._tensor(targets).view(-1), reduction="none"
        )
        return nats.view(targets.shape).double().cpu().numpy()

    def save_weights(self, path) -> None:
        """The model's state dict, for train.judge and train.logits."""
        torch.save(self.model.state_dict(), path)

    def load_weights(self, path) -> None:
        self.model.load_state_dict(torch.load(path, map_location=self.name, weights_only=True))

    @torch.no_grad()
    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """The model's logits for `inputs` (rows, T): float32 of shape (rows, T, vocabulary)."""
        self.model.eval()
        with self._autocast():
            logits = self.model(self._tensor(inputs))
        return logits.float().cpu().numpy()

    def peak_memory_mb(self) -> float:
        """Peak accelerator memory allocated (MiB); 0.0 on cpu/mps, where it is not tracked."""
        return torch.cuda.max_memory_allocated() / 2**20 if self.name == "cuda" else 0.0

    def device_name(self) -> str:
        """The GPU's name on cuda ("NVIDIA H200"), else the device ("cpu", "mps")."""
        return torch.cuda.get_device_name() if self.name == "cuda" else self.name

    def peak_flops(self) -> float:
        """Matmul FLOP/s in the training dtype (bf16 on cuda, fp32 elsewhere), measured once per
        machine (train.flops.cached_peak_flops)."""
        dtype = torch.bfloat16 if self.name == "cuda" else torch.float32
        return cached_peak_flops(
            f"torch {torch.__version__}|{self.device_name()}|{dtype}|"
            f"{torch.get_num_threads()} threads",
            lambda: measure_matmul_flops(
                self.name, dtype, size=4096 if self.name == "cuda" else 512),
        )
