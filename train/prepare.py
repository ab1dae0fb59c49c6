"""python -m train.prepare [--data PATH] [--text-column NAME] [--eval-tokens N] [any trainer flag]

Builds (or finds) the tokenized cache for the data a trainer run with the same flags would use,
and prints where it is and how big each split is. Exit 2 on a bad flag or data source, 3 with a
line starting REFUSED when the training data holds the validation text.
"""

from __future__ import annotations

import sys

from train.config import ConfigError, parse_args
from train.data import DataError, LeakError, cache_dir, prepare
from train.evaluate import current_eval_hash


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
        data = prepare(config.data, config.text_column, config.eval_tokens)
    except LeakError as error:
        print(f"REFUSED: {error}", flush=True)
        return 3
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"source:       {config.data or 'shipped corpus (train/data/kjv.txt.gz)'}")
    print(f"cache:        {cache_dir()}/{data.source_id}-val{config.eval_tokens}.npz")
    print(f"train_tokens: {len(data.train_tokens)} in {len(data.train_starts)} documents")
    print(f"val_tokens:   {len(data.val_tokens)}")
    pinned = current_eval_hash(data.val_tokens, config.eval_seq_len, config.eval_tokens)
    print(f"eval_hash:    {pinned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
