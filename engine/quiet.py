"""The numerical libraries' routine messages, hidden while a study writes its report.

A study ends with a PyMC fit. Left alone, PyTensor warns that it could not link to a BLAS
(a pip install never does; the report's small model does not need one), ArviZ announces its
refactor once a day, and PyMC logs four lines about NUTS. None of it is about the study.
`--verbose` shows them all again.

Everything changed here is changed for the scope only and restored after it: the warning
filters (by `warnings.catch_warnings`) and the level of PyMC's sampling logger.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# (category, regular expression matched at the start of the message)
ROUTINE_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, r"PyTensor could not link to a BLAS installation"),
    (FutureWarning, r"\s*ArviZ is undergoing a major refactor"),
)
# The sampler's logger, not PyMC's top one: importing pymc sets that one to INFO, and the import
# may happen inside the scope; the child's level is its own.
SAMPLER_LOGGER = "pymc.sampling"


@contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """Hide PyTensor's BLAS warning, ArviZ's refactor notice and PyMC's NUTS progress lines
    (INFO) for the scope; PyMC's warnings and errors still show. `verbose`: change nothing."""
    if verbose:
        yield
        return
    logger = logging.getLogger(SAMPLER_LOGGER)
    level = logger.level
    with warnings.catch_warnings():
        for category, message in ROUTINE_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            logger.setLevel(level)
