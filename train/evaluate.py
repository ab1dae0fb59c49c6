"""The immutable evaluation: val_bpb on the fixed validation prefix, and the hash that pins it.

val_bpb = sum(nats over scored target tokens) / (ln 2 * sum(bytes of those targets))

The validation stream (BOS-prefixed documents, see train.data) is cut into consecutive rows of
`eval_seq_len` inputs; the first `eval_tokens // eval_seq_len` rows are scored. A target's byte
count is 1 for a byte token and 0 for BOS, so document boundaries add neither nats nor bytes.
Backends supply only `per_token_nats(inputs, targets)`; the sums happen here, in float64 and in a
fixed order, so every backend shares one definition. Editing this module changes `eval_hash`, and
the engine refuses runs whose evaluation hash differs from the study's.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Callable

import numpy as np

from train.data import BOS

EVAL_BATCH_ROWS = 32  # rows per forward pass; does not change the definition

NatsFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def target_bytes(targets: np.ndarray) -> np.ndarray:
    """Bytes each target token stands for: 1 for a byte token, 0 for BOS (int64, same shape)."""
    return (targets != BOS).astype(np.int64)


def bits_per_byte(nats: np.ndarray, nbytes: np.ndarray) -> float:
    """val_bpb = sum(nats where nbytes > 0) / (ln 2 * sum(nbytes)); bits per UTF-8 byte."""
    nats = np.asarray(nats, dtype=np.float64).ravel()
    nbytes = np.asarray(nbytes, dtype=np.int64).ravel()
    if nats.shape != nbytes.shape:
        raise ValueError(f"nats has {nats.size} entries but nbytes has {nbytes.size}")
    total_bytes = int(nbytes.sum())
    if total_bytes <= 0:
        raise ValueError(f"no target bytes to score (sum of nbytes = {total_bytes})")
    return float(nats[nbytes > 0].sum() / (math.log(2) * total_bytes))


def evaluation_rows(val_tokens: np.ndarray, eval_seq_len: int, eval_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), int64 of shape (eval_tokens // eval_seq_len, eval_seq_len), from the prefix."""
    n_rows = eval_tokens // eval_seq_len
    needed = n_rows * eval_seq_len + 1
    if len(val_tokens) < needed:
        raise ValueError(f"validation prefix has {len(val_tokens)} tokens, evaluation needs {needed}")
    stream = np.asarray(val_tokens[:needed], dtype=np.int64)
    return stream[:-1].reshape(n_rows, eval_seq_len), stream[1:].reshape(n_rows, eval_seq_len)


def evaluate_val_bpb(per_token_nats: NatsFunction, val_tokens: np.ndarray, eval_seq_len: int, eval_tokens: int) -> float:
    """val_bpb of a model given as `per_token_nats(inputs, targets) -> nats` (same shape as targets)."""
    inputs, targets = evaluation_rows(val_tokens, eval_seq_len, eval_tokens)
    nats = [
        np.asarray(per_token_nats(inputs[i : i + EVAL_BATCH_ROWS], targets[i : i + EVAL_BATCH_ROWS]), dtype=np.float64)
        for i in range(0, len(inputs), EVAL_BATCH_ROWS)
    ]
    return bits_per_byte(np.concatenate(nats, axis=0), target_bytes(targets))


def eval_hash(module_source: bytes, val_tokens: np.ndarray, eval_seq_len: int, eval_tokens: int) -> str:
    """12 hex digits of sha256(evaluation source, validation tokens, eval_seq_len, eval_tokens)."""
    digest = hashlib.sha256()
    digest.update(module_source)
    digest.update(np.ascontiguousarray(val_tokens, dtype=np.uint16).tobytes())
    digest.update(f"|{eval_seq_len}|{eval_tokens}".encode())
    return digest.hexdigest()[:12]


def current_eval_hash(val_tokens: np.ndarray, eval_seq_len: int, eval_tokens: int) -> str:
    """eval_hash of this module's source file as it is on disk now."""
    return eval_hash(Path(__file__).read_bytes(), val_tokens, eval_seq_len, eval_tokens)
