"""What a study tells the person watching: the ETA, the live panel on a terminal within 80
columns, and the numerical libraries kept quiet unless --verbose."""
from __future__ import annotations

import io
import logging
import re
import warnings
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from engine.core import IncumbentSummary
from engine.progress import WIDTH, Progress, clock, eta_seconds
from engine.quiet import ROUTINE_WARNINGS, SAMPLER_LOGGER, quiet_libraries
from engine.records import StepDecision, StepPlan

seconds = st.floats(0, 1e6, allow_nan=False)
counts = st.integers(0, 10_000)


@given(seconds, st.integers(1, 10_000), counts)
def test_the_eta_is_the_sessions_pace_times_the_runs_left(elapsed, done, left):
    assert eta_seconds(elapsed, done, left) == pytest.approx(elapsed / done * left)


@given(seconds, counts, counts, st.floats(-1e3, 1e6, allow_nan=False))
def test_a_wall_clock_budget_caps_the_eta_and_it_is_never_negative(elapsed, done, left, bound):
    eta = eta_seconds(elapsed, done, left, bound)
    by_pace = elapsed / done * left if done else None
    assert eta == (max(0.0, bound) if by_pace is None else min(by_pace, max(0.0, bound)))
    assert eta >= 0


def test_no_pace_and_no_clock_is_no_eta_and_negative_counts_are_refused():
    assert eta_seconds(12.0, 0, 5) is None
    with pytest.raises(ValueError, match="runs_left"):
        eta_seconds(1.0, 1, -1)


@pytest.mark.parametrize("value, text", [(None, "—"), (0, "0:00:00"), (59.6, "0:01:00"),
                                         (3725, "1:02:05"), (90061, "25:01:01")])
def test_a_clock_reads_hours_minutes_seconds(value, text):
    assert clock(value) == text


def terminal(width: int = 200) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    return Progress(enabled=True, live=True, console=console), out


def test_the_live_panel_counts_runs_against_the_budget_and_marks_a_reopened_trial():
    progress, out = terminal()
    assert progress.console.width == WIDTH
    plan = StepPlan("run", "a_much_longer_hypothesis_name_than_fits_in_the_room_left", 4,
                    "chosen", incumbent_runs=1)
    with progress.session(budget_runs=40, runs_used=10):
        progress.begin_step(7, plan, 5, reopened=True)
        for _ in range(3):
            progress.run_finished()
        panel = console_text(progress._panel())
        decision = StepDecision(7, plan.hypothesis, "keep", 0.9712, -0.2, -0.01, 9, "")
        progress.step(7, plan, [SimpleNamespace(value=1.25)] * 5, decision,
                      IncumbentSummary(("a",), 1.2, (1.1, 1.3)), 1.0)
    assert "13/40 runs" in panel and "ETA" in panel and "3 of 5 runs done" in panel
    assert "reopened" in panel
    shown = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", line)  # without cursor controls
             for line in out.getvalue().splitlines()]
    lines = [line for line in shown if line.startswith("[  7]")]
    assert len(lines) == 1 and "reopened" in lines[0] and "keep" in lines[0]
    assert "0.971" in lines[0]
    assert all(len(line) <= WIDTH for line in shown)


def console_text(renderable) -> str:
    console = Console(file=io.StringIO(), width=WIDTH, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get()


def test_off_a_terminal_a_step_is_one_plain_line_naming_a_reopened_trial():
    out = io.StringIO()
    progress = Progress(enabled=True, stream=out)
    plan = StepPlan("run", "h1", 2, "chosen")
    progress.begin_step(3, plan, 2, reopened=True)
    progress.step(3, plan, [SimpleNamespace(value=2.0)] * 2, None,
                  IncumbentSummary((), 2.0, (1.9, 2.1)), 1.0)
    assert out.getvalue().splitlines() == [
        "[  3] h1 (reopened)            runs  2 metric 2.0000 | incumbent 2.0000 "
        "[1.9000, 2.1000] kept 0"]


@pytest.mark.parametrize("verbose", [False, True])
def test_the_libraries_routine_messages_are_hidden_for_the_scope_unless_verbose(verbose):
    logger = logging.getLogger(SAMPLER_LOGGER)
    before = logger.level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_libraries(verbose):
            for category, message in ROUTINE_WARNINGS:
                warnings.warn(f"{message.lstrip(chr(92) + 's*')} and more", category)
            warnings.warn("a warning about the study itself", UserWarning)
            level_inside = logger.level
        after = [str(w.message) for w in caught]
    routine = [m for m in after if m != "a warning about the study itself"]
    assert "a warning about the study itself" in after
    assert (routine == []) != verbose
    assert level_inside == (before if verbose else logging.WARNING)
    assert logger.level == before
