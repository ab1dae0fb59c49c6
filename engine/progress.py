"""Progress lines for a person watching a study: one plain line per step, on a terminal or in a
log; the line announcing each step before its runs only on a terminal (`live`)."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO


class Progress:
    def __init__(self, enabled: bool, stream: TextIO | None = None, live: bool = False):
        self.enabled, self.live = enabled, live
        self.stream = stream or sys.stderr

    def say(self, message: str, *, always: bool = False) -> None:
        """A line for the person; `always` ones (errors, where to resume) print even when quiet."""
        if self.enabled or always:
            print(message, file=self.stream, flush=True)

    def status(self, message: str) -> None:
        """What is running now: on a terminal only, where nothing else shows the study is busy."""
        if self.live:
            self.say(f"… {message}")

    def step(self, step: int, plan, runs: Sequence, decision, incumbent, sign: float) -> None:
        """One line per concluded step: what ran, the mean metric of its runs, the verdict and the
        incumbent (an engine.records StepPlan and StepDecision, an engine.core IncumbentSummary)."""
        if not self.enabled:
            return
        values = [sign * r.value for r in runs if r.value is not None]
        metric = f"{sum(values) / len(values):.4f}" if values else "—"
        what = plan.describe() if plan.kind == "design" else plan.hypothesis or plan.kind
        verdict = ""
        if decision is not None:
            p = "—" if decision.p_better is None else f"{decision.p_better:.3f}"
            verdict = f" p_better {p} → {decision.verdict}"
        lo, hi = incumbent.interval
        self.say(f"[{step:3d}] {what:<24} runs {len(runs):2d} metric {metric}{verdict} | "
                 f"incumbent {incumbent.mean:.4f} [{lo:.4f}, {hi:.4f}] kept {len(incumbent.kept)}")
