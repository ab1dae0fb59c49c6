"""The immutable evaluation: val_bpb against hand computations, and what its hash covers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import train.evaluate as evaluate
from train.data import BOS, VOCAB_SIZE, encode, pack_documents
from train.evaluate import bits_per_byte, eval_hash, evaluate_val_bpb, evaluation_rows, target_bytes


def test_bits_per_byte_matches_a_hand_computation_with_multibyte_utf8():
    # "é" is 2 bytes (c3 a9), "€" is 3 bytes (e2 82 ac): 6 byte tokens after BOS, plus a second BOS.
    tokens, _ = pack_documents(["aé€", "b"])
    assert tokens.tolist() == [BOS, 0x61, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, BOS, 0x62]
    targets = tokens[1:]
    nats = np.array([0.5, 1.0, 2.0, 0.25, 0.75, 1.5, 9.0, 3.0])  # the 9.0 is on the BOS target
    # scored: every target but BOS -> (0.5 + 1 + 2 + 0.25 + 0.75 + 1.5 + 3) nats over 7 bytes
    expected = 9.0 / (math.log(2) * 7)
    assert target_bytes(targets).tolist() == [1, 1, 1, 1, 1, 1, 0, 1]
    assert bits_per_byte(nats, target_bytes(targets)) == pytest.approx(expected, rel=1e-12)


def test_a_uniform_model_scores_log2_of_the_vocabulary():
    val_tokens, _ = pack_documents(["naïve café, 東京 " * 40, "second document"])

    def uniform(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return np.full(targets.shape, math.log(VOCAB_SIZE))

    expected = pytest.approx(math.log2(VOCAB_SIZE), rel=1e-12)
    assert evaluate_val_bpb(uniform, val_tokens, 16, 256) == expected


def test_a_model_knowing_the_text_scores_its_true_bits_per_byte():
    """A model putting probability p on every true next byte scores -log2(p) per byte, on any
    text."""
    val_tokens, _ = pack_documents(["ü" * 300])
    probability = 0.3

    def confident(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return np.full(targets.shape, -math.log(probability))

    expected = pytest.approx(-math.log2(probability), rel=1e-12)
    assert evaluate_val_bpb(confident, val_tokens, 32, 320) == expected


def test_evaluation_rows_are_consecutive_windows_of_the_prefix():
    val_tokens = np.arange(100, dtype=np.uint16)
    inputs, targets = evaluation_rows(val_tokens, 8, 30)  # 30 // 8 = 3 rows
    assert inputs.shape == targets.shape == (3, 8)
    assert inputs.ravel().tolist() == list(range(24))
    assert targets.ravel().tolist() == list(range(1, 25))
    with pytest.raises(ValueError, match="needs 25"):
        evaluation_rows(val_tokens[:20], 8, 30)


def test_bits_per_byte_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="nats has 2 entries but nbytes has 3"):
        bits_per_byte(np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="no target bytes"):
        bits_per_byte(np.zeros(2), np.zeros(2))


def test_eval_hash_changes_with_the_module_source_the_data_and_the_settings():
    source = Path(evaluate.__file__).read_bytes()
    val_tokens = encode("In the beginning")
    base = eval_hash(source, val_tokens, 256, 1024)
    assert base == eval_hash(source, val_tokens.copy(), 256, 1024)  # a pure function of its inputs
    edited = source.replace(b"math.log(2)", b"math.log(2.0)")
    assert edited != source
    assert eval_hash(edited, val_tokens, 256, 1024) != base
    assert eval_hash(source + b"\n", val_tokens, 256, 1024) != base
    changed_data = val_tokens.copy()
    changed_data[3] += 1
    assert eval_hash(source, changed_data, 256, 1024) != base
    assert eval_hash(source, val_tokens, 128, 1024) != base
    assert eval_hash(source, val_tokens, 256, 2048) != base
    assert len(base) == 12 and int(base, 16) >= 0
