"""Shared fixtures for the trainer's tests: a private data cache and a tiny, fast configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# depth 1, width 32, seq 64, 8 rows: a few milliseconds per step on one CPU thread
TINY_FLAGS = [
    "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--seq-len", "64", "--batch-size", "8",
    "--eval-seq-len", "64", "--eval-tokens", "4096", "--threads", "1",
]


@pytest.fixture()
def tiny_flags() -> list[str]:
    return list(TINY_FLAGS)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A cache directory private to this test session (TRAIN_DATA_DIR)."""
    return tmp_path_factory.mktemp("train-cache")


@pytest.fixture()
def cache_env(data_dir, monkeypatch) -> Path:
    monkeypatch.setenv("TRAIN_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture()
def run_cli(data_dir):
    """Run `python -m <module> args...` in a subprocess; returns the CompletedProcess."""

    def run(
        args: list[str], module: str = "train", timeout: float = 120
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "TRAIN_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
        return subprocess.run(
            [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
            text=True, timeout=timeout,
        )

    return run

