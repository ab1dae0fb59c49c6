"""Benchmark of the default CPU miniature: speed against a scratch reference, fixed per-run cost,
memory, and the noise the engine sees through.

Command (about 4 minutes on 2 cores with the defaults; other processes on the machine inflate
the spread, which is why the speed is a ratio measured in one process):

    .venv/bin/python experiments/bench_trainer.py [--rounds 6] [--steps-per-round 10]
                                                  [--fixed-runs 3] [--budget 8]
                                                  [--seeds 0] [--repeats 0] [--noise-budget 30]

(append `| tee /tmp/bench_trainer.txt` to keep a copy of the output).

Prints:
- **speed**: tokens/s of the trainer's training step (train.torch_backend) and of `Reference`, a
  plain-PyTorch model written below with the same shape, the same features and the same
  Muon/AdamW split, causal attention by `F.scaled_dot_product_attention(is_causal=True)`. Both
  train on the same batches in this process, in `--rounds` alternating timed blocks; the ratio
  trainer / reference is given per round (median, min, max), for the trainer's default config
  (its sliding-window layer attends through a mask) and for the trainer with every layer causal
  (`window_pattern = "L"`, what the reference computes).
- **fixed cost**: `--fixed-runs` runs of `python -m train --time-budget B` as subprocesses; fixed
  cost = the run's wall-clock time (process start to exit) minus its timed training seconds, and
  its share of B. Also their peak RSS.
- **noise** (with `--seeds N`/`--repeats N` > 0): val_bpb over N seeds and over N repeats of
  one seed at `--noise-budget` seconds, and MFU = (6 * matmul params + attention FLOPs per token)
  * tokens/s / the fp32 matmul FLOP/s torch reaches in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the trainer does, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from train.config import TrainConfig  # noqa: E402
from train.data import VOCAB_SIZE, prepare, sample_batch  # noqa: E402
from train.evaluate import evaluate_val_bpb  # noqa: E402
from train.flops import measure_matmul_flops  # noqa: E402
from train.torch_backend import TorchBackend  # noqa: E402

# --- the reference: a scratch miniature in plain PyTorch -----------------------------------


class ReferenceBlock(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, value_embedding: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)
        self.value_mix = nn.Parameter(torch.ones(1)) if value_embedding else None

    def forward(self, x, value_embed, cos, sin):
        batch, length, width = x.shape
        h = F.rms_norm(x, (width,))
        q, k, v = self.qkv(h).split(width, dim=-1)
        if value_embed is not None:
            v = v + self.value_mix * value_embed
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q, k = (F.rms_norm(rotate(t, cos, sin), (t.size(-1),)) for t in (q, k))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.down(F.relu(self.up(F.rms_norm(x, (width,)))).square())


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class Reference(nn.Module):
    """The trainer's features (RMSNorm, rotary with q/k norm, ReLU^2, value embeddings on
    alternating layers ending on the last, residual and x0 lambdas, softcapped untied head),
    written without the trainer's shared rules; q, k and v in one matmul."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        width, layers = config.n_embd, config.n_layer
        self.softcap = config.logit_softcap
        self.wte = nn.Embedding(VOCAB_SIZE, width)
        self.value_layers = [i for i in range(layers) if i % 2 == (layers - 1) % 2]
        self.value_embeds = nn.ModuleList(nn.Embedding(VOCAB_SIZE, width)
                                          for _ in self.value_layers)
        self.blocks = nn.ModuleList(
            ReferenceBlock(width, config.n_head, config.mlp_ratio * width, i in self.value_layers)
            for i in range(layers))
        self.resid = nn.Parameter(torch.ones(layers))
        self.x0 = nn.Parameter(torch.full((layers,), 0.1))
        self.head = nn.Linear(width, VOCAB_SIZE, bias=False)
        head_dim = width // config.n_head
        frequency = 10000.0 ** (-torch.arange(0, head_dim, 2) / head_dim)
        angles = torch.outer(torch.arange(config.seq_len, dtype=torch.float32), frequency)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        for block in self.blocks:
            nn.init.zeros_(block.out.weight)
            nn.init.zeros_(block.down.weight)
        nn.init.normal_(self.head.weight, std=0.001)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        length = idx.size(1)
        cos, sin = self.cos[:length], self.sin[:length]
        x = x0 = F.rms_norm(self.wte(idx), (self.wte.embedding_dim,))
        embeds = {layer: table(idx) for layer, table in zip(self.value_layers, self.value_embeds)}
        for i, block in enumerate(self.blocks):
            x = block(self.resid[i] * x + self.x0[i] * x0, embeds.get(i), cos, sin)
        logits = self.head(F.rms_norm(x, (x.size(-1),)))
        return self.softcap * torch.tanh(logits / self.softcap)


def orthogonalise(g: torch.Tensor) -> torch.Tensor:
    """Quintic Newton-Schulz, five steps, on the wide orientation (Keller Jordan's Muon)."""
    x = g / (g.norm() + 1e-7)
    wide = x.size(0) <= x.size(1)
    x = x if wide else x.T
    for _ in range(5):
        gram = x @ x.T
        x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
    return x if wide else x.T


class ReferenceMuon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                buffer = self.state[p].setdefault("buffer", torch.zeros_like(p))
                buffer.lerp_(p.grad, 1 - group["momentum"])
                update = orthogonalise(p.grad.lerp(buffer, group["momentum"]))
                p.add_(update, alpha=-group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5)


class ReferenceTrainer:
    """Reference + Muon on the block matrices, AdamW (betas, eps, lrs of the config) on the rest."""

    def __init__(self, config: TrainConfig):
        torch.manual_seed(config.seed)
        self.model = Reference(config)
        matrices = [p for block in self.model.blocks for name, p in block.named_parameters()
                    if p.ndim == 2]
        embeddings = [self.model.wte.weight, *(t.weight for t in self.model.value_embeds)]
        scalars = [self.model.resid, self.model.x0,
                   *(b.value_mix for b in self.model.blocks if b.value_mix is not None)]
        self.optimizers = [
            ReferenceMuon(matrices, lr=config.matrix_lr, momentum=config.muon_momentum),
            torch.optim.AdamW(
                [dict(params=embeddings, lr=config.embedding_lr),
                 dict(params=[self.model.head.weight], lr=config.unembedding_lr),
                 dict(params=scalars, lr=config.scalar_lr)],
                betas=(config.adam_beta1, config.adam_beta2), eps=1e-10, weight_decay=0.0),
        ]

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        logits = self.model(torch.from_numpy(inputs))
        loss = F.cross_entropy(logits.view(-1, VOCAB_SIZE), torch.from_numpy(targets).view(-1))
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        self.model.zero_grad(set_to_none=True)
        return float(loss.item())


# --- measurements --------------------------------------------------------------------------


def timed_tokens_per_second(step, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    start = time.perf_counter()
    for inputs, targets in batches:
        step(inputs, targets)
    return sum(inputs.size for inputs, _ in batches) / (time.perf_counter() - start)


def speed_against_reference(rounds: int, steps_per_round: int) -> None:
    """Alternating timed blocks of the trainer (default and all-causal) and the reference."""
    data = prepare("", "text", TrainConfig().eval_tokens)
    rng = np.random.default_rng(0)
    contenders = {
        "trainer": TorchBackend(TrainConfig(), "cpu"),
        "trainer, all layers causal": TorchBackend(TrainConfig(window_pattern="L"), "cpu"),
        "reference": ReferenceTrainer(TrainConfig()),
    }
    steps = {
        "reference": contenders["reference"].train_step,
        **{name: (lambda x, y, b=backend: b.train_step(x, y, 1.0, inject_nan=False))
           for name, backend in contenders.items() if name != "reference"},
    }
    config = TrainConfig()
    batch = lambda: sample_batch(data.train_tokens, data.train_starts,  # noqa: E731
                                 config.batch_size, config.seq_len, rng)
    for step in steps.values():  # warm-up: allocation, thread pools
        for _ in range(3):
            step(*batch())
    speeds: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(rounds):
        batches = [batch() for _ in range(steps_per_round)]
        order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
        for name in order:
            speeds[name].append(timed_tokens_per_second(steps[name], batches))
    print(f"speed: {rounds} rounds of {steps_per_round} steps each, "
          f"{torch.get_num_threads()} threads")
    for name, values in speeds.items():
        print(f"  {name}: {statistics.median(values):,.0f} tokens/s median "
              f"(min {min(values):,.0f}, max {max(values):,.0f})")
    for name in ("trainer", "trainer, all layers causal"):
        ratios = [a / b for a, b in zip(speeds[name], speeds["reference"])]
        print(f"  ratio {name} / reference: median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


def run_trainer(arguments: list[str]) -> dict[str, float]:
    """One `python -m train` run: its summary values, its wall-clock seconds from process start
    to exit, and its peak RSS in MiB."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "train", "--backend", "cpu", *arguments],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"trainer exited {code}: {stdout[-500:]}")
    values = {"wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024}  # KiB on Linux
    for line in stdout.split("\n---\n")[-1].strip().splitlines():
        key, _, value = line.partition(":")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            pass
    return values


def fixed_cost(runs: int, budget: float) -> None:
    """Fixed cost of whole runs, and two of its parts measured on their own: starting Python and
    importing what a torch run imports, and the evaluation."""
    results = [run_trainer(["--time-budget", str(budget), "--seed", str(seed)])
               for seed in range(1, runs + 1)]
    fixed = [r["wall_seconds"] - r["training_seconds"] for r in results]
    print(f"fixed cost: {runs} runs of `python -m train --time-budget {budget}`")
    print(describe("  wall seconds", [r["wall_seconds"] for r in results]))
    print(describe("  fixed seconds (wall - training)", fixed))
    print(f"  fixed share of a {budget:g} s run: median {statistics.median(fixed) / budget:.1%}")
    print(describe("  peak RSS MiB", [r["peak_rss_mb"] for r in results]))
    imports = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import train.__main__, train.torch_backend"],
                       cwd=REPO, check=True)
        imports.append(time.perf_counter() - started)
    print(describe("  of which: Python start and imports, seconds", imports))
    config = TrainConfig()
    data = prepare(config.data, config.text_column, config.eval_tokens)
    backend = TorchBackend(config, "cpu")
    evaluations = []
    for _ in range(runs):
        started = time.perf_counter()
        evaluate_val_bpb(backend.per_token_nats, data.val_tokens, config.eval_seq_len,
                         config.eval_tokens)
        evaluations.append(time.perf_counter() - started)
    print(describe(f"  of which: evaluation of {config.eval_tokens} tokens, seconds", evaluations))


def describe(name: str, values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return (f"{name}: n={len(values)} mean={statistics.mean(values):.4f} sd={sd:.4f} "
            f"min={min(values):.4f} max={max(values):.4f}")


def noise(seeds: int, repeats: int, budget: float) -> None:
    config = TrainConfig()
    arguments = lambda seed: ["--time-budget", str(budget), "--seed", str(seed)]  # noqa: E731
    seed_runs = [run_trainer(arguments(seed)) for seed in range(1, seeds + 1)]
    repeat_runs = [run_trainer(arguments(1)) for _ in range(repeats)]
    runs = seed_runs + repeat_runs
    throughput = [(r["num_steps"] - config.untimed_steps) * config.tokens_per_step
                  / r["training_seconds"] for r in runs]
    print(f"noise at a {budget:g} s budget")
    print(describe("  tokens_per_second", throughput))
    print(describe("  num_steps", [r["num_steps"] for r in runs]))
    if seed_runs:
        print(describe(f"  val_bpb over {seeds} seeds", [r["val_bpb"] for r in seed_runs]))
    if repeat_runs:
        print(describe(f"  val_bpb over {repeats} repeats of seed 1",
                       [r["val_bpb"] for r in repeat_runs]))
    model_flops_per_token = TorchBackend(config, "cpu").flops_per_token
    matmul_flops = measure_matmul_flops("cpu", torch.float32, size=512, seconds=2.0)
    print(f"  flops_per_token: {model_flops_per_token:.4g} (6 * matmul params + attention)")
    print(f"  matmul_flops_per_second: {matmul_flops:.4g} (fp32 512x512)")
    mfu = model_flops_per_token * statistics.mean(throughput) / matmul_flops
    print(f"  mfu_percent: {100 * mfu:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--fixed-runs", type=int, default=3)
    parser.add_argument("--budget", type=float, default=8.0)
    parser.add_argument("--seeds", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--noise-budget", type=float, default=30.0)
    args = parser.parse_args()
    torch.set_num_threads(TrainConfig().threads or os.cpu_count() or 1)
    config = TrainConfig()
    print(f"machine: {os.cpu_count()} cores, load average "
          f"{tuple(round(x, 2) for x in os.getloadavg())}, torch {torch.__version__}")
    print(f"config: depth {config.n_layer}, width {config.n_embd}, seq {config.seq_len}, "
          f"{config.tokens_per_step} tokens/step, windows {config.window_pattern}")
    if args.rounds > 0:
        speed_against_reference(args.rounds, args.steps_per_round)
    if args.fixed_runs > 0:
        fixed_cost(args.fixed_runs, args.budget)
    if args.seeds > 0 or args.repeats > 0:
        noise(args.seeds, args.repeats, args.noise_budget)


if __name__ == "__main__":
    main()
