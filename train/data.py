"""Corpus, byte-level tokenizer, train/validation split, BOS-aligned batches.

Documents come from the shipped public-domain corpus (train/data/kjv.txt.gz, checked against its
recorded SHA-256), from a user's text files (documents separated by blank lines) or from parquet
shards (one document per row of a text column). Each document is encoded as BOS followed by its
UTF-8 bytes; the validation split is the leading documents of the corpus (in file order) that
cover `eval_tokens + 1` tokens, and never changes; the rest is the training split. Prepared token
arrays are cached under $TRAIN_DATA_DIR (or .cache/train in the repository), written atomically
so parallel runs may prepare at once.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

BOS = 256  # the one special token: begins every document
VOCAB_SIZE = 257  # 256 byte values + BOS
TOKENIZER_VERSION = "bytes-v1"  # part of every cache key

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_CORPUS = DATA_DIR / "kjv.txt.gz"
DEFAULT_CORPUS_SHA256 = DATA_DIR / "kjv.sha256"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")


class DataError(ValueError):
    """A missing, unreadable or corrupt data source; the CLI reports it and exits 2."""


@dataclass(frozen=True)
class PreparedData:
    train_tokens: np.ndarray  # uint16, BOS-prefixed documents concatenated
    train_starts: np.ndarray  # int64, index of every BOS in train_tokens
    val_tokens: np.ndarray  # uint16, the fixed validation prefix
    source_id: str  # hash of where the documents came from


def encode(text: str) -> np.ndarray:
    """Byte-level tokens of `text` (its UTF-8 bytes as uint16), without BOS."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)


def decode(tokens: np.ndarray) -> str:
    """Text of byte tokens, BOS dropped; invalid UTF-8 is replaced."""
    data = bytes(int(t) for t in tokens if t != BOS)
    return data.decode("utf-8", errors="replace")


def split_paragraphs(text: str) -> list[str]:
    """Documents of a plain-text file: paragraphs separated by blank lines, empty ones dropped."""
    return [doc.strip("\n") for doc in _PARAGRAPH_BREAK.split(text) if doc.strip()]


def read_default_corpus() -> str:
    """The shipped corpus, refused unless its decompressed SHA-256 matches the recorded one."""
    raw = gzip.decompress(DEFAULT_CORPUS.read_bytes())
    expected = DEFAULT_CORPUS_SHA256.read_text().split()[0]
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise DataError(f"corpus {DEFAULT_CORPUS} has sha256 {actual}, expected {expected}")
    return raw.decode("utf-8")


def source_files(data: str) -> list[Path]:
    """The files behind a `data` knob: one file, or a directory's .txt/.txt.gz/.parquet files,
    sorted."""
    path = Path(data).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_supported(p))
        if not files:
            raise DataError(
                f"bad value for 'data': {data!r} (directory has no .txt, .txt.gz or .parquet files)"
            )
        return files
    if path.is_file() and _is_supported(path):
        return [path]
    raise DataError(
        f"bad value for 'data': {data!r} "
        "(expected a .txt, .txt.gz or .parquet file, or a directory of them)"
    )


def _is_supported(path: Path) -> bool:
    return path.name.endswith((".txt", ".txt.gz", ".parquet"))


def read_documents(data: str, text_column: str) -> Iterator[str]:
    """Documents in a fixed order: the shipped corpus when `data` is empty, else the user's
    files."""
    if not data:
        yield from split_paragraphs(read_default_corpus())
        return
    for path in source_files(data):
        if path.name.endswith(".parquet"):
            yield from _parquet_documents(path, text_column)
        else:
            raw = path.read_bytes()
            if path.name.endswith(".gz"):
                raw = gzip.decompress(raw)
            yield from split_paragraphs(raw.decode("utf-8", errors="replace"))


def _parquet_documents(path: Path, text_column: str) -> Iterator[str]:
    import pyarrow.parquet as pq  # optional dependency, only for parquet input

    table = pq.read_table(path)
    if text_column not in table.column_names:
        raise DataError(
            f"bad value for 'text_column': {text_column!r} "
            f"({path} has columns {table.column_names})"
        )
    for text in table.column(text_column).to_pylist():
        if text:
            yield text


def pack_documents(documents: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate BOS + bytes of each document; return (tokens uint16, BOS positions int64)."""
    encoded = [encode(doc) for doc in documents]
    lengths = np.array([len(e) + 1 for e in encoded], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    tokens = np.empty(int(lengths.sum()), dtype=np.uint16)
    for start, doc in zip(starts, encoded):
        tokens[start] = BOS
        tokens[start + 1 : start + 1 + len(doc)] = doc
    return tokens, starts


def split_validation(documents: list[str], eval_tokens: int) -> tuple[list[str], list[str]]:
    """(validation, training): the fewest leading documents holding eval_tokens + 1 tokens, and
    the rest."""
    needed = eval_tokens + 1
    total = 0
    for index, doc in enumerate(documents):
        total += len(doc.encode("utf-8")) + 1
        if total >= needed:
            return documents[: index + 1], documents[index + 1 :]
    raise DataError(
        f"bad value for 'eval_tokens': {eval_tokens} (the corpus has only {total} tokens)"
    )


def source_id(data: str, text_column: str) -> str:
    """Cache key of a data source: content hash of the shipped corpus, or path/size/mtime of
    user files."""
    digest = hashlib.sha256(TOKENIZER_VERSION.encode())
    if not data:
        digest.update(DEFAULT_CORPUS_SHA256.read_text().encode())
    else:
        digest.update(text_column.encode())
        for path in source_files(data):
            stat = path.stat()
            digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """$TRAIN_DATA_DIR, else .cache/train in the repository checkout, else ~/.cache/train-gpt."""
    if os.environ.get("TRAIN_DATA_DIR"):
        return Path(os.environ["TRAIN_DATA_DIR"])
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file():
        return repo / ".cache" / "train"
    return Path.home() / ".cache" / "train-gpt"


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp:
            np.savez(temp, **arrays)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def prepare(data: str, text_column: str, eval_tokens: int) -> PreparedData:
    """Tokenized train/validation splits, from the cache when present, else built and cached."""
    key = source_id(data, text_column)
    path = cache_dir() / f"{key}-val{eval_tokens}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return PreparedData(
                cached["train_tokens"], cached["train_starts"], cached["val_tokens"], key
            )
    documents = list(read_documents(data, text_column))
    val_docs, train_docs = split_validation(documents, eval_tokens)
    if not train_docs:
        raise DataError(
            f"bad value for 'data': {data!r} "
            "(no documents left for training after the validation prefix)"
        )
    val_tokens, _ = pack_documents(val_docs)
    train_tokens, train_starts = pack_documents(train_docs)
    arrays = {"train_tokens": train_tokens, "train_starts": train_starts, "val_tokens": val_tokens}
    _write_atomically(path, arrays)
    return PreparedData(train_tokens, train_starts, val_tokens, key)


def sample_batch(
    tokens: np.ndarray, starts: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """BOS-aligned rows: each row begins at a random document start and runs on for seq_len + 1
    tokens.

    Returns (inputs, targets), int64 arrays of shape (batch_size, seq_len); targets are inputs
    shifted by one. Starts too close to the end to fit a row are never drawn.
    """
    usable = starts[starts + seq_len + 1 <= len(tokens)]
    if len(usable) == 0:
        raise DataError(
            f"training split ({len(tokens)} tokens) is shorter than one row of {seq_len + 1}"
        )
    chosen = rng.choice(usable, size=batch_size)
    rows = np.stack([tokens[s : s + seq_len + 1] for s in chosen]).astype(np.int64)
    return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])
