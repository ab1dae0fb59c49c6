"""python -m train.logits --config FILE --weights FILE: a trained model that answers with logits.

The untrusted half of a patched run's evaluation (train.judge is the trusted half). It runs the
patched trainer's own model code, confined (train.confine), and never sees a target: it reads
arrays of input rows (int64, framed by train.judge.send_array) on stdin and answers each with
the model's float32 logits on stdout, until stdin closes. Whatever the model's code prints
goes to stderr, so it cannot forge a reply.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from train.config import ConfigError, parse_args, split_flags
from train.evaluate import EVAL_BATCH_ROWS
from train.judge import receive_array, send_array
from train.torch_backend import TorchBackend, resolve_device


def main(argv: list[str]) -> int:
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the model's own prints go to stderr, never into the replies
    try:
        flags, argv = split_flags(argv, ["--weights"], required=["--weights"])
        weights = Path(flags["--weights"])
        config = parse_args(argv)
        backend = TorchBackend(config, resolve_device(config.backend))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    backend.load_weights(weights)
    # a request is at most a batch of evaluation rows: int64 tokens, with room for the header
    limit = 8 * EVAL_BATCH_ROWS * config.eval_seq_len + 4096
    while (rows := receive_array(sys.stdin.buffer, limit)) is not None:
        send_array(replies, backend.logits(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
