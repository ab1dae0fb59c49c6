"""python -m train.judge --config FILE --weights FILE --candidate DIR --scratch DIR
                         [--memory-mb N] [--knob V]...

The trusted evaluation of a patched run. The patched trainer whose code is in --candidate (the
folder holding its train/) has trained and saved its weights; this process, the engine's own
code, copies them (never through a link) into --scratch, a folder of its own, reads the
validation data, and asks the candidate's model for logits through train.logits, confined to
reading its libraries, the candidate's code and the copy. Nothing of the candidate's code runs
in this process, so it cannot touch the evaluation: val_bpb and eval_hash come from this
module and train.evaluate, the same definitions as an unpatched run's.

The rows go to the model in a secret order; then a second server of the same model, which has
seen none of them, gets a few of the batches with the tokens after a secret position t of each
row replaced, and its logits at positions up to t must be the first server's. A model that sees
the tokens it predicts (a removed causal mask, a peek at the next token) fails it. The secret is
a seed from os.urandom, printed once the model has answered. Prints the summary block
(`val_bpb`, `eval_hash`, `causal_change`, `judge_seed`); exit 1 with a FAIL line on a NaN
val_bpb, 3 with a REFUSED line when the check fails, 4 when the weights are not a plain file or
the candidate's model server dies or answers out of contract.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from train.config import ConfigError, TrainConfig, parse_args, split_flags, to_dict
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
JUDGE_FLAGS = ("--weights", "--candidate", "--scratch", "--memory-mb")


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
    """A train.logits process of the candidate's code: rows in, logits out, checked. It reads
    the candidate's code (`code`, the folder holding its train/) and `shared` (the weights and
    config, copied there by the judge), and writes only a folder of its own, newly made under
    `scratch` with a random name: no other server can find it (`scratch` is not readable)."""

    def __init__(self, shared: Path, code: Path, scratch: Path, memory_mb: int):
        own = Path(tempfile.mkdtemp(prefix="server-", dir=scratch))
        environment = kept_environment({**os.environ, "PYTHONPATH": str(code),
                                        "TRAIN_DATA_DIR": str(own / "cache"),
                                        "TMPDIR": str(own)})
        project = Path(__file__).resolve().parent.parent
        read = [*library_folders(keep_out=[project, cache_dir()]), str(code), str(shared)]
        command = [sys.executable, "-P", "-m", "train.logits", "--config",
                   str(shared / "config.json"), "--weights", str(shared / "weights.pt")]
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


def copy_weights(weights: Path, shared: Path) -> None:
    """Copy the trained weights into `shared`, opening them without following a link (a
    process the training left behind may have swapped the file for one), as a plain file."""
    try:
        source = os.open(weights, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        raise ServerError(f"the trained weights cannot be opened as a plain file ({error})")
    with os.fdopen(source, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ServerError("the trained weights are not a plain file")
        with open(shared / "weights.pt", "wb") as copy:
            shutil.copyfileobj(handle, copy)


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


def judge(config: TrainConfig, score: Callable[[np.ndarray], np.ndarray],
          check: Callable[[], Callable[[np.ndarray], np.ndarray]],
          rng: np.random.Generator) -> tuple[float, float]:
    """(val_bpb, causal change) of a model served as `score(rows) -> (rows, T, vocabulary)`.

    The rows go to `score` in an order drawn from `rng` (so it cannot tell which row follows
    which: a row's last target is the next row's first token), in batches of EVAL_BATCH_ROWS.
    Then `check()` starts a second server of the same model, which has seen none of them, and
    CHECK_BATCHES of the batches, drawn too, go to it with every row's tokens after its own cut
    replaced (`perturbed_after_cuts`): its logits up to each cut must be the first server's. A
    model that peeks at a token it predicts, at any cut, cannot match them, whatever it
    remembers. val_bpb sums the nats in the rows' own order, by train.evaluate."""
    data = prepare(config.data, config.text_column, config.eval_tokens)
    inputs, targets = evaluation_rows(data.val_tokens, config.eval_seq_len, config.eval_tokens)
    order = rng.permutation(len(inputs))
    batches = [order[i:i + EVAL_BATCH_ROWS] for i in range(0, len(order), EVAL_BATCH_ROWS)]
    checked = rng.choice(len(batches), size=min(CHECK_BATCHES, len(batches)), replace=False)
    nats = np.zeros(targets.shape)
    scored = {}
    for index, rows in enumerate(batches):
        scored[index] = score(inputs[rows])
        nats[rows] = per_token_nats(scored[index], targets[rows])
    fresh = check()
    change = 0.0
    for index in checked.tolist():
        perturbed, cuts = perturbed_after_cuts(inputs[batches[index]], rng)
        change = max(change, causal_change(scored[index], fresh(perturbed), cuts))
    return bits_per_byte(nats, target_bytes(targets)), change


def main(argv: list[str]) -> int:
    try:
        flags, rest = split_flags(argv, JUDGE_FLAGS, required=JUDGE_FLAGS[:3])
        config = parse_args(rest)
        code, scratch = Path(flags["--candidate"]), Path(flags["--scratch"])
        memory = int(flags.get("--memory-mb", "0"))
        shared = scratch / "shared"  # read by the servers, written by this process only
        shared.mkdir()
        (shared / "config.json").write_text(json.dumps(to_dict(config)))
        copy_weights(Path(flags["--weights"]), shared)
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 4
    servers: list[ModelServer] = []

    def start() -> Callable[[np.ndarray], np.ndarray]:
        if servers:
            servers[-1].close()  # the scoring server ends before the check's starts
        servers.append(ModelServer(shared, code, scratch, memory))
        return servers[-1].logits

    seed = int.from_bytes(os.urandom(8), "little")  # secret until the model has answered
    try:
        val_bpb, change = judge(config, start(), start, np.random.default_rng(seed))
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 4
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        for server in servers:
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
