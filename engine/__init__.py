"""The engine: a study's state machine (core), its loop, its ledger-backed handle (study) and
the Python API, `engine.create_study` and `engine.Study`, imported on first use so that
`python -m engine.config` and the like stay quick."""
from __future__ import annotations

API = ("AskedRun", "Study", "StudyRun", "create_study")


def __getattr__(name: str):
    if name == "create_study":
        from engine.api import create_study
        return create_study
    if name in API:
        from engine import study
        return getattr(study, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
