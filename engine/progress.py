"""Progress for a person watching a study.

Off a terminal (a log, a pipe): one plain line per concluded step, nothing else moves. On a
terminal (`live`), within 80 columns: one compact line per concluded step, and under them a
panel that rich redraws while the study runs: a bar of the runs used against the budget with
the elapsed time and an ETA, the step in flight with its runs done, and the incumbent. A
reverted change that gets a new trial is marked "reopened" in both. Errors and the resume hint
print always, quiet or not.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

WIDTH = 80  # the terminal display's columns at most
VERDICT_STYLES = {"keep": "bold green", "revert": "red", "undecided": "yellow"}
REOPENED = "reopened"


def eta_seconds(elapsed: float, runs_done: int, runs_left: int,
                seconds_left: float | None = None) -> float | None:
    """Seconds until the budget is spent at this session's pace: elapsed / runs_done × runs_left
    (seconds per run times runs), or `seconds_left` of a wall-clock budget when that comes
    sooner. None when there is no pace yet (no run finished this session) and no clock bound."""
    if elapsed < 0 or runs_done < 0 or runs_left < 0:
        raise ValueError(f"eta_seconds needs elapsed, runs_done, runs_left >= 0, got "
                         f"{elapsed!r}, {runs_done!r}, {runs_left!r}")
    by_pace = elapsed / runs_done * runs_left if runs_done else None
    if seconds_left is None:
        return by_pace
    seconds_left = max(0.0, seconds_left)
    return seconds_left if by_pace is None else min(by_pace, seconds_left)


def clock(seconds: float | None) -> str:
    """h:mm:ss, or "—" for no figure."""
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """What a study tells the person running it. `enabled` false (--quiet): only the `always`
    lines. `live`: a terminal, drawn with rich on `console` (one on `stream` by default, at most
    80 columns wide). `verbose`: the numerical libraries' own messages are shown too (read by
    the loop, engine.quiet)."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, live: bool = False,
                 verbose: bool = False, console: Console | None = None):
        self.enabled, self.live, self.verbose = enabled, live, verbose
        self.stream = stream or sys.stderr
        self.console: Console | None = None
        if enabled and live:
            self.console = console or Console(file=self.stream, highlight=False)
            self.console.width = min(self.console.width, WIDTH)
        self._live: Live | None = None
        self._budget = self._used = self._session_runs = 0
        self._started = time.monotonic()
        self._seconds_left_at_start: float | None = None
        self._activity = ""
        self._step_runs = (0, 0)  # (done, planned) of the steps in flight
        self._incumbent = ""
        self._reopened: set[int] = set()

    # -- lines --------------------------------------------------------------------------------
    def say(self, message: str, *, always: bool = False) -> None:
        """A line for the person; `always` ones (errors, where to resume) print even when quiet."""
        if self.console is not None:
            self.console.print(Text(message))
        elif self.enabled or always:
            print(message, file=self.stream, flush=True)

    def status(self, message: str) -> None:
        """What is running now: on a terminal only, where nothing else shows the study is busy
        (the live panel's activity while a session runs, else a line)."""
        if self.console is None:
            return
        if self._live is not None:
            self._activity = message
        else:
            self.say(f"… {message}")

    def step(self, step: int, plan, runs: Sequence, decision, incumbent, sign: float) -> None:
        """One line per concluded step: what ran, the mean metric of its runs, the verdict and
        (off a terminal) the incumbent; an engine.records StepPlan and StepDecision, an
        engine.core IncumbentSummary. On a terminal the incumbent is the panel's."""
        done, planned = self._step_runs
        self._step_runs = (max(0, done - len(runs)), max(0, planned - len(runs)))
        if not self.enabled:
            return
        values = [sign * r.value for r in runs if r.value is not None]
        metric = f"{sum(values) / len(values):.4f}" if values else "—"
        what = plan.describe() if plan.kind == "design" else plan.hypothesis or plan.kind
        reopened = step in self._reopened
        p = None if decision is None else (
            "—" if decision.p_better is None else f"{decision.p_better:.3f}")
        lo, hi = incumbent.interval
        self._incumbent = (f"incumbent {incumbent.mean:.4f} [{lo:.4f}, {hi:.4f}], kept "
                           + (", ".join(incumbent.kept) or "nothing"))
        if self.console is None:
            verdict = "" if decision is None else f" p_better {p} → {decision.verdict}"
            label = f"{what} ({REOPENED})" if reopened else what
            self.say(f"[{step:3d}] {label:<24} runs {len(runs):2d} metric {metric}{verdict} | "
                     f"incumbent {incumbent.mean:.4f} [{lo:.4f}, {hi:.4f}] "
                     f"kept {len(incumbent.kept)}")
            return
        tail = Text(f"  {len(runs):2d} runs  {metric:>9}")
        if decision is not None:
            tail.append(f"  P(better) {p:>5}  ")
            tail.append(f"{decision.verdict:<9}", VERDICT_STYLES.get(decision.verdict, ""))
        head = Text(f"[{step:3d}] ")
        room = max(10, self.console.width - len(head) - len(tail))
        move = Text(f"{REOPENED} ", "bold magenta") if reopened else Text()
        move.append(what)  # after the marker: a long name is what gets cut
        move.truncate(room, overflow="ellipsis", pad=True)
        self.console.print(Text.assemble(head, move, tail), no_wrap=True, overflow="ellipsis")

    # -- the live panel -----------------------------------------------------------------------
    @contextmanager
    def session(self, *, budget_runs: int, runs_used: int, budget_seconds: float = 0.0,
                elapsed: float = 0.0) -> Iterator[None]:
        """While a study runs: on a terminal, the live panel (gone when the scope ends, so the
        lines after it print plainly). `budget_seconds` > 0 is a wall-clock budget of which
        `elapsed` seconds were spent before this session."""
        self._budget, self._used, self._session_runs = budget_runs, runs_used, 0
        self._started = time.monotonic()
        self._seconds_left_at_start = budget_seconds - elapsed if budget_seconds > 0 else None
        if self.console is None:
            yield
            return
        with Live(console=self.console, get_renderable=self._panel, refresh_per_second=2,
                  transient=True) as live:
            self._live = live
            try:
                yield
            finally:
                self._live, self._activity = None, ""

    def begin_step(self, step: int, plan, n_runs: int, *, reopened: bool) -> None:
        """A step's runs start (an engine.records StepPlan); `reopened`: its move was reverted
        before and gets a new trial."""
        if reopened:
            self._reopened.add(step)
        done, planned = self._step_runs
        self._step_runs = (done, planned + n_runs)
        self.status(f"step {step}{f' ({REOPENED})' if reopened else ''}: {plan.describe()}")

    def run_finished(self) -> None:
        """One run of the steps in flight is done (recorded)."""
        self._used += 1
        self._session_runs += 1
        done, planned = self._step_runs
        self._step_runs = (done + 1, planned)

    def _panel(self) -> Group:
        """The bar with its counts and clock, the step in flight, the incumbent."""
        elapsed = time.monotonic() - self._started
        seconds_left = (None if self._seconds_left_at_start is None
                        else self._seconds_left_at_start - elapsed)
        eta = eta_seconds(elapsed, self._session_runs, max(0, self._budget - self._used),
                          seconds_left)
        bar = Table.grid(expand=True)
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True)
        bar.add_row(ProgressBar(total=max(1, self._budget), completed=self._used),
                    f" {self._used}/{self._budget} runs  {clock(elapsed)} elapsed  "
                    f"ETA {clock(eta)}")
        done, planned = self._step_runs
        # the counts first: a long move's name is what gets cut at 80 columns
        doing = (f"{done} of {planned} runs done · {self._activity}" if self._activity
                 else "planning the next step")
        lines = [Text(doing, no_wrap=True, overflow="ellipsis")]
        if self._incumbent:
            lines.append(Text(self._incumbent, style="dim", no_wrap=True, overflow="ellipsis"))
        return Group(bar, *lines)
