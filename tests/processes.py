"""Helpers for tests that check which processes outlive a run."""
from __future__ import annotations

import os
from pathlib import Path

HAS_PROC = Path("/proc/self/environ").exists()


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan may wait for a reaper in a container)."""
    if not HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
