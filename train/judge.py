"""python -m train.judge --config FILE --weights FILE --candidate DIR [--memory-mb N] [--knob V]...

The trusted evaluation of a patched run. The patched trainer in DIR (a working copy whose model
code a hypothesis changed) has trained and saved its weights; this process, the engine's own
code, reads the validation data, and asks the candidate's model for logits through
train.logits, confined to reading its libraries and DIR. Nothing of the candidate's code runs
in this process, so it cannot touch the evaluation: val_bpb and eval_hash come from this
module and train.evaluate, the same definitions as an unpatched run's.

The rows go to the model in a secret order, and the causality check hides among them: a few
batches are sent again with the tokens after a secret position t of each row replaced, and the
logits at positions up to t must not change. A model that sees the tokens it predicts (a
removed causal mask, a peek at the next token) fails it. The secret is a seed from os.urandom,
printed once the model has answered. Prints the summary block (`val_bpb`, `eval_hash`,
`causal_change`, `judge_seed`); exit 1 with a FAIL line on a NaN val_bpb, 3 with a REFUSED
line when the check fails, 4 when the candidate's model server dies or answers out of contract.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from train.config import ConfigError, TrainConfig, parse_args, to_dict
from train.confine import confined, kept_environment, library_folders
from train.data import VOCAB_SIZE, DataError, cache_dir, prepare
from train.evaluate import (
    EVAL_BATCH_ROWS,
    bits_per_byte,
    current_eval_hash,
    evaluation_rows,
    target_bytes,
)

# Logits are nats; a causal model's change is exactly 0 on a CPU and round-off elsewhere.
CAUSAL_TOLERANCE = 1e-3
CHECK_BATCHES = 2  # scored batches also sent perturbed, for the causality check
JUDGE_FLAGS = ("--weights", "--candidate", "--memory-mb")


class ServerError(RuntimeError):
    """The candidate's model server died or answered out of contract."""


def send_array(stream, array: np.ndarray) -> None:
    """One array on a pipe: its .npy bytes after their length (8 bytes, little-endian)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    stream.write(len(buffer.getvalue()).to_bytes(8, "little") + buffer.getvalue())
    stream.flush()


def receive_array(stream, max_bytes: int) -> np.ndarray | None:
    """The next array sent by send_array; None at the end of the stream. ValueError for a
    message over `max_bytes` or cut short."""
    head = stream.read(8)
    if not head:
        return None
    size = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < size <= max_bytes:
        raise ValueError(f"a message of {size} bytes (at most {max_bytes} expected)")
    body = stream.read(size)
    if len(body) != size:
        raise ValueError(f"a message cut short ({len(body)} of {size} bytes)")
    return np.load(io.BytesIO(body), allow_pickle=False)


class ModelServer:
    """The candidate's train.logits process: rows in, logits out, checked. It reads the
    candidate's folder (its code) and its weights, and writes only a folder of its own."""

    def __init__(self, config: TrainConfig, weights: Path, candidate: Path, memory_mb: int):
        self.folder = tempfile.TemporaryDirectory(prefix="judge-")
        own = Path(self.folder.name)
        config_path = own / "judged-config.json"
        config_path.write_text(json.dumps(to_dict(config)))
        environment = kept_environment({**os.environ, "PYTHONPATH": str(candidate),
                                        "TRAIN_DATA_DIR": str(own / "cache"),
                                        "TMPDIR": str(own)})
        project = Path(__file__).resolve().parent.parent
        read = [*library_folders(keep_out=[project, cache_dir()]), str(candidate),
                str(weights.parent), str(config_path)]
        command = [sys.executable, "-P", "-m", "train.logits", "--config", str(config_path),
                   "--weights", str(weights)]
        self.process = subprocess.Popen(
            confined(command, read=read, write=[str(own)], memory_mb=memory_mb),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=own, env=environment)

    def logits(self, rows: np.ndarray) -> np.ndarray:
        expected = (*rows.shape, VOCAB_SIZE)
        try:
            send_array(self.process.stdin, rows)
            reply = receive_array(self.process.stdout, 4 * int(np.prod(expected)) + 4096)
            if reply is None:
                raise ValueError("no reply")
        except (OSError, ValueError) as error:
            code = self.process.poll()
            raise ServerError(f"the candidate's model server failed ({error}; exit status "
                              f"{code})") from None
        if reply.shape != expected or reply.dtype != np.float32:
            raise ServerError(f"the candidate's model answered {reply.dtype} {reply.shape}, "
                              f"expected float32 {expected}")
        return reply

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.folder.cleanup()


def per_token_nats(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] in float64: logsumexp(l) - l[target], nats per target."""
    values = logits.astype(np.float64)
    peak = values.max(axis=-1, keepdims=True)
    log_total = peak[..., 0] + np.log(np.exp(values - peak).sum(axis=-1))
    return log_total - np.take_along_axis(values, targets[..., None], axis=-1)[..., 0]


def perturbed_after_cuts(rows: np.ndarray, rng: np.random.Generator
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(`rows` with every token after each row's own cut t replaced by another token, the cuts
    t): each t is uniform on 0 .. T - 2, so at least one token follows it."""
    length = rows.shape[1]
    cuts = rng.integers(0, length - 1, size=len(rows))
    perturbed = rows.copy()
    for r, cut in enumerate(cuts):
        shift = rng.integers(1, VOCAB_SIZE, size=length - cut - 1)
        perturbed[r, cut + 1:] = (rows[r, cut + 1:] + shift) % VOCAB_SIZE
    return perturbed, cuts


def causal_change(before: np.ndarray, after: np.ndarray, cuts: np.ndarray) -> float:
    """The largest change, in nats, of a logit at a position <= t between the logits of rows
    (`before`) and of the same rows with the tokens after t changed (`after`)."""
    return max(float(np.abs(before[r, :cut + 1] - after[r, :cut + 1]).max())
               for r, cut in enumerate(cuts))


def judge(config: TrainConfig, logits: Callable[[np.ndarray], np.ndarray],
          rng: np.random.Generator) -> tuple[float, float]:
    """(val_bpb, causal change) of the model `logits(rows) -> (rows, T, vocabulary)`.

    The rows go to the model in an order drawn from `rng` (so it cannot tell which row follows
    which: a row's last target is the next row's first token), in batches of EVAL_BATCH_ROWS;
    CHECK_BATCHES of the batches, drawn too, are also sent with every row perturbed after its
    own cut (`perturbed_after_cuts`), just before or after the batch itself, so the check looks
    like any other request. val_bpb sums the nats in the rows' own order, by train.evaluate."""
    data = prepare(config.data, config.text_column, config.eval_tokens)
    inputs, targets = evaluation_rows(data.val_tokens, config.eval_seq_len, config.eval_tokens)
    order = rng.permutation(len(inputs))
    batches = [order[i:i + EVAL_BATCH_ROWS] for i in range(0, len(order), EVAL_BATCH_ROWS)]
    checked = set(rng.choice(len(batches), size=min(CHECK_BATCHES, len(batches)),
                             replace=False).tolist())
    nats = np.zeros(targets.shape)
    change = 0.0
    for index, rows in enumerate(batches):
        if index in checked:
            perturbed, cuts = perturbed_after_cuts(inputs[rows], rng)
            if rng.random() < 0.5:
                after, before = logits(perturbed), logits(inputs[rows])
            else:
                before, after = logits(inputs[rows]), logits(perturbed)
            change = max(change, causal_change(before, after, cuts))
        else:
            before = logits(inputs[rows])
        nats[rows] = per_token_nats(before, targets[rows])
    return bits_per_byte(nats, target_bytes(targets)), change


def split_flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    flags, rest = {}, []
    tokens = iter(argv)
    for token in tokens:
        if token in JUDGE_FLAGS:
            flags[token] = next(tokens, "")
        else:
            rest.append(token)
    missing = [flag for flag in JUDGE_FLAGS[:2] if not flags.get(flag)]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} needed")
    return flags, rest


def main(argv: list[str]) -> int:
    try:
        flags, rest = split_flags(argv)
        config = parse_args(rest)
        server = ModelServer(config, Path(flags["--weights"]).resolve(),
                             Path(flags["--candidate"]).resolve(),
                             int(flags.get("--memory-mb", "0")))
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seed = int.from_bytes(os.urandom(8), "little")  # secret until the model has answered
    try:
        val_bpb, change = judge(config, server.logits, np.random.default_rng(seed))
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 4
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        server.close()
    if not np.isfinite(val_bpb):
        print(f"FAIL: val_bpb is {val_bpb}", flush=True)
        return 1
    if change > CAUSAL_TOLERANCE:
        print(f"REFUSED: the model is not causal: a logit at a position <= t changed by "
              f"{change:.3g} nats when the tokens after t changed (tolerance "
              f"{CAUSAL_TOLERANCE:g}): it sees the tokens it predicts", flush=True)
        return 3
    data = prepare(config.data, config.text_column, config.eval_tokens)
    evaluation_hash = current_eval_hash(data.val_tokens, config.eval_seq_len, config.eval_tokens)
    print(f"---\nval_bpb:          {val_bpb:.6f}\neval_hash:        {evaluation_hash}\n"
          f"causal_change:    {change:.3g}\njudge_seed:       {seed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
