"""Corpus, tokenizer, split, cache and BOS-aligned batches; text-file and parquet inputs."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train import data
from train.data import (
    BOS,
    DataError,
    decode,
    encode,
    pack_documents,
    prepare,
    sample_batch,
    split_paragraphs,
)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_tokens_round_trip_any_unicode(text):
    tokens = encode(text)
    assert len(tokens) == len(text.encode("utf-8")) and (tokens < 256).all()
    assert decode(tokens) == text


def test_the_shipped_corpus_matches_its_recorded_hash_and_is_large_english():
    text = data.read_default_corpus()
    assert len(text.encode("utf-8")) >= 1_000_000
    assert "In the beginning God created the heaven and the earth." in text
    recorded = data.DEFAULT_CORPUS_SHA256.read_text().split()[0]
    assert hashlib.sha256(gzip.decompress(data.DEFAULT_CORPUS.read_bytes())).hexdigest() == recorded


def test_a_corrupt_corpus_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "kjv.txt.gz"
    fake.write_bytes(gzip.compress(b"tampered"))
    monkeypatch.setattr(data, "DEFAULT_CORPUS", fake)
    with pytest.raises(DataError, match="expected dfea14a0"):
        data.read_default_corpus()


def test_paragraphs_and_packing_put_bos_before_every_document():
    docs = split_paragraphs("first\nline\n\n  \n\nsecond\r\n\r\nthird\n")
    assert docs == ["first\nline", "second\r", "third"]
    tokens, starts = pack_documents(["ab", "", "ç"])
    assert tokens.tolist() == [BOS, 97, 98, BOS, BOS, 0xC3, 0xA7]
    assert starts.tolist() == [0, 3, 4]


def test_batches_start_at_document_starts_and_follow_the_seed():
    tokens, starts = pack_documents([f"document number {i}" for i in range(200)])
    first = sample_batch(tokens, starts, 16, 20, np.random.default_rng(7))
    again = sample_batch(tokens, starts, 16, 20, np.random.default_rng(7))
    other = sample_batch(tokens, starts, 16, 20, np.random.default_rng(8))
    inputs, targets = first
    assert inputs.shape == targets.shape == (16, 20) and (inputs[:, 0] == BOS).all()
    assert (inputs[:, 1:] == targets[:, :-1]).all()
    assert all((a == b).all() for a, b in zip(first, again)) and not (first[0] == other[0]).all()
    with pytest.raises(DataError, match="shorter than one row"):
        sample_batch(tokens[:10], starts[:1], 2, 20, np.random.default_rng(0))


def test_text_files_become_a_fixed_validation_prefix_and_a_cached_training_split(
    tmp_path, cache_env
):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(f"alpha {i} ünïcode" for i in range(50)))
    beta = "\n\n".join(f"beta {i}" for i in range(50))
    (corpus / "b.txt.gz").write_bytes(gzip.compress(beta.encode()))
    prepared = prepare(str(corpus), "text", eval_tokens=100)
    assert decode(prepared.val_tokens).startswith("alpha 0 ünïcode")
    assert len(prepared.val_tokens) >= 101
    assert decode(prepared.train_tokens).endswith("beta 49")
    assert (prepared.train_tokens[prepared.train_starts] == BOS).all()
    cached = list(cache_env.glob(f"{prepared.source_id}-val100.npz"))
    assert len(cached) == 1 and not list(cache_env.glob("*.tmp"))
    again = prepare(str(corpus), "text", eval_tokens=100)
    assert (again.val_tokens == prepared.val_tokens).all() and again.source_id == prepared.source_id


def test_parquet_shards_read_the_text_column(tmp_path, cache_env):
    rows = [f"story {i}: once upon a time, naïve" for i in range(40)]
    pq.write_table(pa.table({"text": rows, "id": list(range(40))}), tmp_path / "shard_000.parquet")
    prepared = prepare(str(tmp_path / "shard_000.parquet"), "text", eval_tokens=64)
    assert decode(prepared.val_tokens).startswith("story 0: once upon a time, naïve")
    assert len(prepared.train_starts) + decode(prepared.val_tokens).count("story") == 40
    with pytest.raises(DataError, match="'text_column': 'body'"):
        prepare(str(tmp_path / "shard_000.parquet"), "body", eval_tokens=64)


def test_bad_data_sources_name_the_value(tmp_path, cache_env):
    with pytest.raises(DataError, match="'data': .*nowhere"):
        prepare(str(tmp_path / "nowhere"), "text", 64)
    (tmp_path / "tiny.txt").write_text("too short")
    with pytest.raises(DataError, match="'eval_tokens': 64"):
        prepare(str(tmp_path / "tiny.txt"), "text", 64)


def _random_tokens(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(33, 256, count).astype(np.uint16)  # no white space: all compared


def _document(tokens: np.ndarray) -> np.ndarray:
    return np.concatenate([[BOS], tokens]).astype(np.uint16)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2000), st.booleans())
def test_a_validation_document_copied_into_training_is_seen(seed, copied, as_document):
    """One validation document of 2000 random tokens; `copied` of its tokens pasted into
    random training text, inside a document or as one of its own. Seen exactly when the copy
    is the whole document, or when it surely covers half the document: found in full but for
    at most LEAK_WINDOW - 1 tokens at each end."""
    rng = np.random.default_rng(seed)
    document = _random_tokens(rng, 2000)
    other = _random_tokens(rng, 500)
    val = np.concatenate([_document(document), _document(other)])
    train = _random_tokens(rng, 6000)
    assert data.seen_validation(val, _document(train)) == (0.0, "")
    start = int(rng.integers(0, len(document) - copied + 1))
    copy = document[start:start + copied]
    at = int(rng.integers(0, len(train)))
    pasted = ([_document(train[:at]), _document(copy), _document(train[at:])] if as_document
              else [_document(np.concatenate([train[:at], copy, train[at:]]))])
    share, example = data.seen_validation(val, np.concatenate(pasted))
    surely = copied - 2 * (data.LEAK_WINDOW - 1) >= data.LEAK_COVERAGE * len(document)
    never = copied < data.LEAK_COVERAGE * len(document) and not (as_document and copied == 2000)
    if surely or (as_document and copied == 2000):
        assert share == pytest.approx(2000 / 2500) and example
    elif never:
        assert share == 0.0


def test_training_on_the_validation_text_is_refused_and_not_cached(tmp_path, cache_env):
    documents = [f"document {i}: " + "word " * (i % 7 + 3) + str(i * 7919) for i in range(400)]
    clean = tmp_path / "clean.txt"
    clean.write_text("\n\n".join(documents))
    prepared = prepare(str(clean), "text", eval_tokens=2000)
    held_out = int((prepared.val_tokens == BOS).sum())  # the validation documents
    leak = tmp_path / "leak.txt"  # the validation documents, then copies of them to train on
    leak.write_text("\n\n".join(documents[:held_out] * 3 + documents[held_out:]))
    with pytest.raises(data.LeakError, match="validation documents with 100.0% of the"):
        prepare(str(leak), "text", eval_tokens=2000)
    assert not list(cache_env.glob(f"{data.source_id(str(leak), 'text')}-*"))
    blob = tmp_path / "blob.txt"  # the validation documents pasted again as one, reflowed
    blob.write_text("\n\n".join(documents) + "\n\n" + "\n".join(documents[:held_out]))
    with pytest.raises(data.LeakError):
        prepare(str(blob), "text", eval_tokens=2000)


def test_natural_and_templated_repetition_is_not_a_leak():
    """The shipped corpus's own repeats (genealogies Chronicles copies from Genesis) and
    documents written from one template must pass the check."""
    documents = list(data.read_documents("", "text"))
    for eval_tokens in (32768, 131072, 524288):
        val_docs, train_docs = data.split_validation(documents, eval_tokens)
        assert data.seen_validation(pack_documents(val_docs)[0],
                                    pack_documents(train_docs)[0]) == (0.0, "")
    stories = [f"Once upon a time there was a fox number {i} who liked café au lait."
               for i in range(400)]
    val_docs, train_docs = data.split_validation(stories, 4096)
    assert data.seen_validation(pack_documents(val_docs)[0],
                                pack_documents(train_docs)[0]) == (0.0, "")
