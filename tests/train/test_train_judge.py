"""train.judge: its nats against torch's cross-entropy, its causality check against models whose
dependence on later tokens is known, and its val_bpb against the trainer's own evaluation of the
same weights."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from envs.gpt import parse_summary
from train.data import VOCAB_SIZE
from train.judge import (
    causal_change,
    per_token_nats,
    perturbed_after_cuts,
    receive_array,
    send_array,
)

REPO = Path(__file__).resolve().parents[2]


def test_nats_match_torch_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(3, 5, VOCAB_SIZE)).astype(np.float32)
    targets = rng.integers(0, VOCAB_SIZE, size=(3, 5))
    reference = F.cross_entropy(torch.from_numpy(logits).double().view(-1, VOCAB_SIZE),
                                torch.from_numpy(targets).view(-1), reduction="none")
    np.testing.assert_allclose(per_token_nats(logits, targets), reference.view(3, 5).numpy(),
                               rtol=1e-12, atol=1e-12)


def prefix_model(reach: int, honest_at: frozenset[int] = frozenset()):
    """Logits at t are a function of tokens up to t + reach (reach 0: a causal model), except
    at the positions `honest_at`, where it looks no further than t (a cheat that guesses where
    a check cuts)."""
    def logits(rows: np.ndarray) -> np.ndarray:
        padded = np.pad(rows, ((0, 0), (0, reach)))
        seen = np.cumsum(padded, axis=1)[:, reach:].astype(np.float32)
        honest = np.cumsum(rows, axis=1).astype(np.float32)
        for position in honest_at:
            seen[:, position] = honest[:, position]
        return np.repeat(seen[..., None], VOCAB_SIZE, axis=-1) / 100.0
    return logits


def test_a_causal_model_does_not_change_and_one_that_peeks_does():
    rows = np.random.default_rng(1).integers(0, VOCAB_SIZE, size=(6, 32))
    perturbed, cuts = perturbed_after_cuts(rows, np.random.default_rng(0))
    assert all((perturbed[r, :c + 1] == rows[r, :c + 1]).all()
               and (perturbed[r, c + 1:] != rows[r, c + 1:]).all() for r, c in enumerate(cuts))
    causal = prefix_model(0)
    assert causal_change(causal(rows), causal(perturbed), cuts) == 0.0
    peeking = prefix_model(1)
    assert causal_change(peeking(rows), peeking(perturbed), cuts) > 0.01


class RememberingPeeker:
    """Peeks at the next token, except where it has answered rows sharing a prefix before: there
    it replays its earlier logits, so a check that resends a batch with a changed suffix to the
    same server sees nothing change."""

    def __init__(self):
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        logits = prefix_model(1)(rows)
        for r, row in enumerate(rows):
            for old_row, old_logits in self.seen:
                same = np.cumprod(old_row == row).sum()  # the shared prefix's length
                if 0 < same < len(row):
                    logits[r, :same] = old_logits[:same]
            self.seen.append((row.copy(), logits[r].copy()))
        return logits


def test_the_judge_catches_peeks_that_dodge_fixed_cuts_or_remember_what_they_answered(
        cache_env, tiny_flags):
    """A model that peeks at the next token everywhere but at the positions a fixed check
    would cut (as the first version's were) is caught: the judge's cuts are drawn anew; one that
    replays what it answered before for a shared prefix is caught too: the check goes to a
    second server that has answered nothing. A causal model's val_bpb does not depend on the
    secret order the rows were sent in."""
    from train.config import parse_args
    from train.judge import judge

    config = parse_args(tiny_flags)
    length = config.eval_seq_len
    fixed = prefix_model(1, honest_at=frozenset((r + 1) * (length - 1) // 5 for r in range(4)))
    assert judge(config, fixed, lambda: fixed, np.random.default_rng(7))[1] > 0.01
    remembering = RememberingPeeker()
    same_server = judge(config, remembering, lambda: remembering, np.random.default_rng(7))
    assert same_server[1] == 0.0  # what a single long-lived server would have let through
    assert judge(config, RememberingPeeker(), RememberingPeeker,
                 np.random.default_rng(7))[1] > 0.01
    causal = prefix_model(0)
    first, change_a = judge(config, causal, lambda: causal, np.random.default_rng(1))
    second, change_b = judge(config, causal, lambda: causal, np.random.default_rng(2))
    assert first == second and change_a == change_b == 0.0


def test_arrays_cross_the_pipe_intact_and_oversized_ones_are_refused():
    stream = io.BytesIO()
    array = np.arange(12, dtype=np.int64).reshape(3, 4)
    send_array(stream, array)
    stream.seek(0)
    np.testing.assert_array_equal(receive_array(stream, 10_000), array)
    assert receive_array(stream, 10_000) is None
    stream = io.BytesIO()
    send_array(stream, np.zeros(10_000))
    stream.seek(0)
    with pytest.raises(ValueError, match="at most 1000"):
        receive_array(stream, 1000)


def test_the_judge_of_trained_weights_gives_the_trainers_own_val_bpb(tmp_path, run_cli,
                                                                     tiny_flags, cache_env):
    """The same seed and steps on a CPU make the same weights: the trainer's in-process
    evaluation of them and the judge's, through the confined logits server of a copy of the
    trainer, must agree."""
    from train.data import prepare, write_training_split

    flags = [*tiny_flags, "--steps", "20", "--seed", "5", "--backend", "cpu"]
    own = run_cli(flags)
    assert own.returncode == 0, own.stderr
    shutil.copytree(REPO / "train", tmp_path / "train",
                    ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_training_split(tmp_path / "split.npz", prepare("", "text", 4096))
    saved = run_cli([*flags, "--training-split", str(tmp_path / "split.npz"),
                     "--save-weights", str(tmp_path / "weights.pt")])
    assert saved.returncode == 0, saved.stderr
    assert "val_bpb" not in saved.stdout and "eval_hash" not in saved.stdout
    (tmp_path / "scratch").mkdir()
    judged = run_cli([*flags, "--weights", str(tmp_path / "weights.pt"),
                      "--candidate", str(tmp_path), "--scratch", str(tmp_path / "scratch")],
                     module="train.judge")
    assert judged.returncode == 0, judged.stderr
    trained, verdict = parse_summary(own.stdout), parse_summary(judged.stdout)
    assert abs(verdict["val_bpb"] - trained["val_bpb"]) < 1e-5
    assert verdict["eval_hash"] == trained["eval_hash"]
    assert verdict["causal_change"] == 0.0


def test_weights_swapped_for_a_link_are_refused(tmp_path):
    """A process the training left behind may replace the weights by a link to anything: the
    judge opens them without following links."""
    from train.judge import ServerError, copy_weights

    (tmp_path / "real.pt").write_bytes(b"weights")
    (tmp_path / "weights.pt").symlink_to(tmp_path / "real.pt")
    (tmp_path / "shared").mkdir()
    with pytest.raises(ServerError, match="cannot be opened as a plain file"):
        copy_weights(tmp_path / "weights.pt", tmp_path / "shared")
    copy_weights(tmp_path / "real.pt", tmp_path / "shared")
    assert (tmp_path / "shared" / "weights.pt").read_bytes() == b"weights"
