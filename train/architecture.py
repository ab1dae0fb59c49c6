"""The GPT's backend-neutral rules: one definition that train/model.py (torch, the reference),
train/optim.py and train/mlx_backend.py all read, so an architecture change is made once.

Held here, as plain Python on the config: which layers attend through which window, which layers
carry value embeddings, the parameter layout (names and shapes, identical on every backend), each
parameter's initialisation and optimiser group, the learning rate of each group, and the fixed
constants (rotary base, RMSNorm eps, Newton-Schulz coefficients, Adam eps).

A few rules are array arithmetic: `newton_schulz`, `rotate_halves`, `window_keeps`, `softcap` and
`rotary_inverse_frequency` use only `+ - * / ** @`, `.T`, `.shape` and slicing, plus the callables
a backend passes in, so they run on torch tensors and mlx arrays alike and import neither.

Random streams (`stream_seed`): every random thing a run does draws from its own stream, seeded
by the run's seed and its purpose ("data" for the order of the batches, "init:<parameter name>"
for each parameter's initial values). A change to one module then leaves every other parameter's
initial values and the batches as they were for that seed: runs of two configs on one seed share
their luck (common random numbers), which pairing by seed needs.

Not shared: the tensor code of the forward pass and the optimiser update arithmetic (torch's
written out in place in train/optim.py; MLX writes the same formulas out functionally), and the
generators behind the streams (torch's and MLX's draw different numbers from one stream seed,
so one seed gives different weights on torch and on MLX). A backend that lacks a knob refuses it
with `refuse_unimplemented`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable

from train.config import ConfigError, TrainConfig
from train.data import VOCAB_SIZE

ROTARY_BASE = 10000.0
# RMSNorm (no learned scale) eps: float32's machine epsilon, torch's F.rms_norm default for fp32.
RMS_NORM_EPS = 2.0**-23
# Quintic Newton-Schulz coefficients (Keller Jordan's Muon): fast, approximate orthogonalisation.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7  # added to the Frobenius norm before normalising
ADAM_EPS = 1e-10

# --- layers ---------------------------------------------------------------------------------


def layer_windows(config: TrainConfig) -> list[int]:
    """Keys each layer attends to: seq_len // 2 for 'S', the whole context (seq_len) for 'L'.

    The pattern is cycled over layers and the last layer is always full.
    """
    pattern = config.window_pattern
    windows = [
        config.seq_len // 2 if pattern[i % len(pattern)] == "S" else config.seq_len
        for i in range(config.n_layer)
    ]
    windows[-1] = config.seq_len
    return windows


def full_window(window: int, length: int) -> bool:
    """True when a window covers the whole sequence, so the mask is plain causal."""
    return window >= length


def window_keeps(distance: Any, window: int) -> Any:
    """Mask rule: query i may attend to key j iff 0 <= i - j < window (distance = i - j)."""
    return (distance >= 0) & (distance < window)


def has_value_embedding(layer: int, config: TrainConfig) -> bool:
    """Alternating layers carry value embeddings, counted so that the last layer has one."""
    return config.value_embeds and layer % 2 == (config.n_layer - 1) % 2


def value_embedding_layers(config: TrainConfig) -> list[int]:
    return [i for i in range(config.n_layer) if has_value_embedding(i, config)]


def value_embedding_key(layer: int) -> str:
    """Key of layer's value embedding in the model's `value_embeds` table."""
    return f"layer{layer}"


def mlp_width(config: TrainConfig) -> int:
    return config.mlp_ratio * config.n_embd


# --- parameters: layout, initialisation, optimiser group ------------------------------------


def parameter_shapes(config: TrainConfig) -> dict[str, tuple[int, ...]]:
    """Every trainable parameter's name and shape (the names both backends' models use).

    Linear weights are (out, in) on both backends, so weights can be copied across unchanged.
    """
    width, hidden = config.n_embd, mlp_width(config)
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (VOCAB_SIZE, width)}
    for layer in value_embedding_layers(config):
        shapes[f"value_embeds.{value_embedding_key(layer)}.weight"] = (VOCAB_SIZE, width)
    for layer in range(config.n_layer):
        prefix = f"blocks.{layer}"
        for name in ("c_q", "c_k", "c_v", "c_proj"):
            shapes[f"{prefix}.attn.{name}.weight"] = (width, width)
        if has_value_embedding(layer, config):
            shapes[f"{prefix}.attn.ve_lambda"] = (1,)
        shapes[f"{prefix}.mlp.c_fc.weight"] = (hidden, width)
        shapes[f"{prefix}.mlp.c_proj.weight"] = (width, hidden)
    shapes["resid_lambdas"] = (config.n_layer,)
    shapes["x0_lambdas"] = (config.n_layer,)
    shapes["lm_head.weight"] = (VOCAB_SIZE, width)
    return shapes


@dataclass(frozen=True)
class Init:
    """How a parameter starts: 'normal' (mean 0, std = scale), 'uniform' on [-scale, scale],
    'zeros', or 'constant' (every entry = scale)."""

    kind: str
    scale: float = 0.0


def input_bound(config: TrainConfig) -> float:
    """Uniform bound of the matrices that read the residual stream: std 1 / sqrt(n_embd)."""
    return math.sqrt(3.0) / math.sqrt(config.n_embd)


GROUPS = ("matrix", "embedding", "unembedding", "scalar")
MUON_GROUPS = ("matrix",)  # orthogonalised updates and decoupled weight decay
ADAMW_GROUPS = ("embedding", "unembedding", "scalar")  # AdamW, no weight decay
MATMUL_GROUPS = ("matrix", "unembedding")  # weights used in matmuls, counted for FLOPs

# role (a name without its layer) -> (optimiser group, initialisation as a function of config)
_ROLES: dict[str, tuple[str, Callable[[TrainConfig], Init]]] = {
    "wte.weight": ("embedding", lambda c: Init("normal", 1.0)),
    "value_embeds.weight": ("embedding", lambda c: Init("uniform", input_bound(c))),
    "attn.c_q.weight": ("matrix", lambda c: Init("uniform", input_bound(c))),
    "attn.c_k.weight": ("matrix", lambda c: Init("uniform", input_bound(c))),
    "attn.c_v.weight": ("matrix", lambda c: Init("uniform", input_bound(c))),
    "attn.c_proj.weight": ("matrix", lambda c: Init("zeros")),
    "attn.ve_lambda": ("scalar", lambda c: Init("constant", 1.0)),
    "mlp.c_fc.weight": ("matrix", lambda c: Init("uniform", input_bound(c))),
    "mlp.c_proj.weight": ("matrix", lambda c: Init("zeros")),
    "resid_lambdas": ("scalar", lambda c: Init("constant", 1.0)),
    "x0_lambdas": ("scalar", lambda c: Init("constant", 0.1)),
    "lm_head.weight": ("unembedding", lambda c: Init("normal", 0.001)),
}


def _role(name: str) -> tuple[str, Callable[[TrainConfig], Init]]:
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2:
        role = ".".join(parts[2:])
    elif parts[0] == "value_embeds" and len(parts) > 2:
        role = ".".join([parts[0], *parts[2:]])
    else:
        role = name
    if role not in _ROLES:
        raise KeyError(f"no rule for parameter {name!r} (add its role to train.architecture)")
    return _ROLES[role]


def parameter_group(name: str) -> str:
    """'matrix' (Muon), 'embedding', 'unembedding' or 'scalar' (AdamW); KeyError if unknown."""
    return _role(name)[0]


def stream_seed(seed: int, purpose: str) -> int:
    """The seed of the run's random stream for `purpose` (32 bits): a hash of both, so streams
    of different purposes are unrelated and each depends on nothing else of the config."""
    digest = hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def init_stream(name: str) -> str:
    """The purpose of parameter `name`'s initialisation stream."""
    return f"init:{name}"


def parameter_init(name: str, config: TrainConfig) -> Init:
    """autoresearch's init: unit token embedding, tiny head, uniform inputs, zero output
    projections, residual lambdas 1, x0 lambdas 0.1, value-mix lambdas 1."""
    return _role(name)[1](config)


def group_lr(group: str, config: TrainConfig) -> float:
    """Base learning rate of an optimiser group (before the schedule's multiplier)."""
    return {
        "matrix": config.matrix_lr, "embedding": config.embedding_lr,
        "unembedding": config.unembedding_lr, "scalar": config.scalar_lr,
    }[group]


# --- array rules (backend-neutral arithmetic) -----------------------------------------------


def rotary_inverse_frequency(even_indices: Any, head_dim: int) -> Any:
    """base^(-2i / head_dim) for even_indices = 0, 2, ..., head_dim - 2 (a float32 array)."""
    return ROTARY_BASE ** (-even_indices / head_dim)


def rotate_halves(x: Any, cos: Any, sin: Any, concat_last: Callable[[list[Any]], Any]) -> Any:
    """Rotary convention: rotate the two halves of the last axis of x by the tables' angles."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return concat_last([x1 * cos + x2 * sin, x2 * cos - x1 * sin])


def attention_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


def softcap(logits: Any, cap: float, tanh: Callable[[Any], Any]) -> Any:
    """cap * tanh(logits / cap); cap = 0 leaves logits uncapped."""
    return cap * tanh(logits / cap) if cap > 0 else logits


def newton_schulz(
    matrix: Any,
    norm: Callable[[Any], Any],
    steps: int = NS_STEPS,
    transpose: Callable[[Any], Any] = lambda m: m.T,
) -> Any:
    """Approximately U V^T of matrix = U S V^T, from X = M / (|M|_F + eps):
    X <- aX + (bA + cA^2)X with A = X X^T, on the wide orientation of M.

    Singular values end roughly in [0.7, 1.2] (not exactly 1: the iteration trades accuracy for
    speed). `norm` is the backend's Frobenius norm. For a stack of matrices (the last two axes),
    `norm` keeps the leading axes and `transpose` swaps the last two.
    """
    a, b, c = NS_COEFFICIENTS
    x = matrix / (norm(matrix) + NS_EPS)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = transpose(x)
    for _ in range(steps):
        gram = x @ transpose(x)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return transpose(x) if transposed else x


def muon_scale(rows: int, cols: int) -> float:
    """Muon's step multiplier sqrt(max(1, rows / cols)) for a (rows, cols) matrix."""
    return max(1.0, rows / cols) ** 0.5


# --- knobs a backend must implement ---------------------------------------------------------

# Consumed by the shared loop, data and evaluation (train.loop, train.data, train.evaluate), so
# every backend honours them; every other knob is the backend's to implement or refuse.
SHARED_KNOBS = frozenset({
    "batch_size", "warmup_ratio", "warmdown_ratio", "final_lr_frac", "steps", "time_budget",
    "untimed_steps", "backend", "data", "text_column", "eval_tokens", "debug_nan_step",
})


def backend_knobs() -> list[str]:
    """The knobs a backend's model and optimiser must implement (all but SHARED_KNOBS)."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in SHARED_KNOBS]


def refuse_unimplemented(config: TrainConfig, backend: str, handled: frozenset[str]) -> None:
    """ConfigError naming the first backend knob outside `handled` that is not at its default.

    `handled` lists the knobs the backend implements (or knowingly ignores); a knob added to
    TrainConfig later is refused on that backend until it is added there.
    """
    defaults = TrainConfig.__dataclass_fields__
    for knob in backend_knobs():
        value, default = getattr(config, knob), defaults[knob].default
        if knob not in handled and value != default:
            raise ConfigError(
                f"bad value for {knob!r}: {value!r} (the {backend} backend does not implement "
                f"{knob!r}; leave it at its default {default!r} or use a torch backend)"
            )
