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
# The leak check (check_no_leak): a validation document is seen in training when the training
# split holds it verbatim as a document, or when at least LEAK_COVERAGE of its tokens lie in
# LEAK_WINDOW-token spans that the training text repeats (document boundaries and white space
# ignored, so documents pasted in order as one blob, or reflowed, are seen too; a document
# shorter than the window copied any other way is not). Natural repetition is shorter: in
# the shipped corpus no validation document is seen this way (with 64-token windows,
# genealogies that Chronicles copies from Genesis would be), and documents written from one
# template differ within every such span. A study is refused when the documents seen hold
# LEAK_SHARE of the validation tokens.
LEAK_WINDOW = 256
LEAK_COVERAGE = 0.5
LEAK_SHARE = 0.01
LEAK_CHECK_VERSION = "seen-documents-v1"  # part of every cache key: a cache predating the check is
# rebuilt (and checked) rather than trusted

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_CORPUS = DATA_DIR / "kjv.txt.gz"
DEFAULT_CORPUS_SHA256 = DATA_DIR / "kjv.sha256"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")


class DataError(ValueError):
    """A missing, unreadable or corrupt data source; the CLI reports it and exits 2."""


class LeakError(DataError):
    """The training split repeats validation text, so val_bpb would reward memorising it; the
    CLI prints a line starting REFUSED and exits 3."""


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


def window_hashes(tokens: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """64-bit polynomial hashes of tokens[s : s + length] for s = 0, stride, 2 * stride, ...

    h(w) = sum_k w[k] * P ** (length - 1 - k) mod 2**64, with P the 64-bit FNV prime.
    """
    count = (len(tokens) - length) // stride + 1
    hashes = np.zeros(max(count, 0), dtype=np.uint64)
    if count <= 0:
        return hashes
    values = tokens.astype(np.uint64)
    prime = np.uint64(1099511628211)
    with np.errstate(over="ignore"):  # arithmetic mod 2**64 is the point
        for k in range(length):
            hashes = hashes * prime + values[k : k + (count - 1) * stride + 1 : stride]
    return hashes


_SPACES = np.array([ord(c) for c in " \t\n\r"], dtype=np.uint16)


def _documents(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the tokens without BOS and ASCII white space, the index of the document each of them
    belongs to): what is compared, so that neither document boundaries nor reflowed lines
    hide a copy."""
    document = np.cumsum(tokens == BOS) - 1
    text = (tokens != BOS) & ~np.isin(tokens, _SPACES)
    return tokens[text], document[text]


def seen_validation(val_tokens: np.ndarray, train_tokens: np.ndarray,
                    length: int = LEAK_WINDOW) -> tuple[float, str]:
    """(share of the validation tokens in documents the training split holds, an example).

    A validation document is held when it is a training document verbatim, or when at least
    LEAK_COVERAGE of its tokens lie in a validation window (length tokens, any offset) equal to
    a training window (length tokens, every length tokens), BOS and white space dropped;
    hash matches are confirmed token by token. A copy of a validation span is found in full
    but for at most length - 1 tokens at each end.
    """
    val_text, val_document = _documents(val_tokens)
    train_text, train_document = _documents(train_tokens)
    covered = np.zeros(len(val_text), dtype=bool)
    val_hashes = window_hashes(val_text, length)
    first_at = {int(h): i for i, h in reversed(list(enumerate(val_hashes.tolist())))}
    train_hashes = window_hashes(train_text, length, stride=length)
    for index in np.flatnonzero(np.isin(train_hashes, val_hashes)).tolist():
        start, val_start = index * length, first_at[int(train_hashes[index])]
        if np.array_equal(train_text[start : start + length],
                          val_text[val_start : val_start + length]):
            covered[val_start : val_start + length] = True
    starts = np.flatnonzero(np.diff(val_document, prepend=-1))
    ends = np.append(starts[1:], len(val_text))
    train_text_documents = np.split(train_text, np.flatnonzero(np.diff(train_document)) + 1)
    train_documents = {document.tobytes() for document in train_text_documents}
    originals = np.split(val_tokens, np.flatnonzero(val_tokens == BOS))[1:]
    held, example = 0, ""
    for start, end in zip(starts.tolist(), ends.tolist()):
        if (covered[start:end].mean() >= LEAK_COVERAGE
                or val_text[start:end].tobytes() in train_documents):
            held += end - start
            example = example or decode(originals[val_document[start]])
    return (held / len(val_text) if len(val_text) else 0.0), example


def check_no_leak(val_tokens: np.ndarray, train_tokens: np.ndarray) -> None:
    """Raise LeakError when the training split holds validation documents with at least
    LEAK_SHARE of the validation tokens (seen_validation; paraphrases are not caught)."""
    share, example = seen_validation(val_tokens, train_tokens)
    if share >= LEAK_SHARE:
        raise LeakError(
            f"the training data holds validation documents with {share:.1%} of the validation "
            f"tokens (e.g. {example[:60]!r}; the limit is {LEAK_SHARE:.0%}): training on what "
            "val_bpb measures would game the evaluation; remove them from 'data'"
        )


def source_id(data: str, text_column: str) -> str:
    """Cache key of a data source: content hash of the shipped corpus, or path/size/mtime of
    user files."""
    digest = hashlib.sha256((TOKENIZER_VERSION + LEAK_CHECK_VERSION).encode())
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


def write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez of `arrays` at `path`, atomically: readers see the old file or the whole new one."""
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
    """Tokenized train/validation splits, from the cache when present, else built, checked for
    leaked validation text (LeakError) and cached."""
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
    check_no_leak(val_tokens, train_tokens)  # before caching: only checked data is cached
    arrays = {"train_tokens": train_tokens, "train_starts": train_starts, "val_tokens": val_tokens}
    write_atomically(path, arrays)
    return PreparedData(train_tokens, train_starts, val_tokens, key)


def write_training_split(path: Path, data: PreparedData) -> None:
    """The training split alone, for a patched run: its code never sees the validation text."""
    write_atomically(path, {"train_tokens": data.train_tokens, "train_starts": data.train_starts,
                            "source_id": np.array(data.source_id)})


def read_training_split(path: Path) -> PreparedData:
    """A split written by write_training_split, with no validation tokens."""
    try:
        with np.load(path) as saved:
            return PreparedData(saved["train_tokens"], saved["train_starts"],
                                np.zeros(0, dtype=np.uint16), str(saved["source_id"]))
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"bad training split {str(path)!r} ({error})") from None


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
