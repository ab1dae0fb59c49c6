"""Common random numbers: each random thing a run does has its own stream, so two configs on one
seed share the batches and the initial values of every parameter they both have."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from train import architecture as arch
from train.config import TrainConfig
from train.data import prepare
from train.loop import train
from train.model import GPT
from train.torch_backend import TorchBackend

BASE = TrainConfig(n_layer=2, n_embd=32, n_head=2, seq_len=64, batch_size=4, eval_seq_len=64,
                   eval_tokens=4096, threads=1, steps=3, seed=11)
CHANGES = {"value_embeds": {"value_embeds": False}, "matrix_lr": {"matrix_lr": 0.12},
           "depth": {"n_layer": 3}}


def torch_initial_values(config: TrainConfig) -> dict[str, np.ndarray]:
    return {name: p.detach().numpy().copy() for name, p in GPT(config).named_parameters()}


def mlx_initial_values(config: TrainConfig) -> dict[str, np.ndarray]:
    from mlx.utils import tree_flatten

    from train.mlx_backend import MLXBackend

    backend = MLXBackend(config)
    return {name: np.array(v) for name, v in tree_flatten(backend.model.trainable_parameters())}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("initial_values", [torch_initial_values, mlx_initial_values],
                         ids=["torch", "mlx"])
def test_shared_parameters_start_equal_whatever_else_changes(change, initial_values):
    base = initial_values(BASE)
    changed = initial_values(dataclasses.replace(BASE, **CHANGES[change]))
    shared = set(base) & set(changed)
    assert len(shared) >= len(base) - 2  # the change adds or removes a few parameters at most
    for name in shared:
        a, b = base[name], changed[name]
        if a.shape != b.shape:  # a per-layer vector (resid and x0 lambdas): the layers both have
            layers = min(len(a), len(b))
            a, b = a[:layers], b[:layers]
        assert np.array_equal(a, b), name
    # ...and another seed gives other values to the random ones
    other = initial_values(dataclasses.replace(BASE, seed=12))
    assert not np.array_equal(base["wte.weight"], other["wte.weight"])


class RecordingBackend(TorchBackend):
    """The real torch backend, keeping a copy of every batch it trains on."""

    def __init__(self, config: TrainConfig):
        super().__init__(config, "cpu")
        self.batches: list[np.ndarray] = []

    def train_step(self, inputs, targets, multiplier, *, inject_nan):
        self.batches.append(np.concatenate([inputs, targets[:, -1:]], axis=1))
        return super().train_step(inputs, targets, multiplier, inject_nan=inject_nan)


@pytest.mark.parametrize("change", CHANGES)
def test_the_batches_are_the_same_for_every_config_of_a_seed(cache_env, change):
    data = prepare(BASE.data, BASE.text_column, BASE.eval_tokens)
    batches = []
    for config in (BASE, dataclasses.replace(BASE, **CHANGES[change])):
        backend = RecordingBackend(config)
        train(config, data, backend, time.perf_counter())
        batches.append(backend.batches)
    assert len(batches[0]) == len(batches[1]) == BASE.steps
    assert all(np.array_equal(a, b) for a, b in zip(*batches))


def test_streams_differ_by_purpose_and_seed():
    seeds = {arch.stream_seed(seed, purpose) for seed in range(20)
             for purpose in ("data", arch.init_stream("wte.weight"), arch.init_stream("lm_head"))}
    assert len(seeds) == 60 and all(0 <= s < 2**32 for s in seeds)
    torch.manual_seed(0)  # the global generator plays no part in the initial values
    first = torch_initial_values(BASE)["blocks.0.attn.c_q.weight"]
    torch.manual_seed(1)
    assert np.array_equal(first, torch_initial_values(BASE)["blocks.0.attn.c_q.weight"])
