"""Ask and tell: a study driven one run at a time by a caller who makes the runs elsewhere
(Optuna's ask/tell), from the same core commands as the loop (engine.loop.run_study)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from engine.core import Event, Run, Stop, advance, start
from engine.folder import FolderLock
from engine.loop import (
    Study,
    StudyResult,
    execute,
    finish,
    open_session,
    record_outcome,
)
from engine.runner import PlannedRun, with_extra
from engine.scope import one_blas_thread
from envs import Outcome
from envs.base import STATUSES
from envs.python import metric_of


@dataclass(frozen=True)
class AskedRun:
    """A run the study asks for: make `config` at `seed` and tell the study what it gave.

    `step` and `slot` place it in the ledger; `role` is what it is for (base, candidate or
    incumbent); `hypotheses` are the changes applied to the base config to make `config`."""

    step: int
    slot: int
    role: str
    hypotheses: tuple[str, ...]
    config: dict
    seed: int


class AskTell:
    """A study driven one run at a time by a caller who makes the runs (Optuna's ask and tell):
    the same core commands as `run_study`, with the Run commands handed out instead of made.

    Every run of the steps in flight may be asked before any is told, so they can run at once;
    the next step is planned once all of the oldest step's are told. The folder's lock is held from
    construction until the study stops or `close`; a told run is in the ledger at once, so a
    process killed between ask and tell loses only the untold runs, which a new AskTell asks
    for again."""

    def __init__(self, study: Study, *, write_report: bool = True):
        self.study, self.write_report = study, write_report
        self.result: StudyResult | None = None
        self._lock: FolderLock | None = FolderLock(study.out_dir).__enter__()
        self._waiting: dict[tuple[int, int], PlannedRun] = {}  # (step, slot) -> run not told
        self._asked: dict[tuple[int, int], float] = {}  # -> epoch seconds when it was asked
        self._told: set[tuple[int, int]] = set()
        self._session = time.monotonic()
        try:
            with one_blas_thread():
                open_session(study)
                study.state, self._queue = start(study.state, study.rules)
                self._drive()
        except BaseException:
            self.close()
            raise

    def ask(self) -> AskedRun | None:
        """The next run to make, or None: when the study has stopped (`result` says why), or
        when every run of the steps in flight is asked and some are not yet told."""
        if self.result is not None:
            return None
        plan = next((r for key, r in sorted(self._waiting.items()) if key not in self._asked),
                    None)
        if plan is None:
            return None
        self._asked[(plan.step, plan.slot)] = time.time()
        return AskedRun(plan.step, plan.slot, plan.role, tuple(sorted(plan.applied)),
                        dict(plan.config), plan.seed)

    def tell(self, run: AskedRun, metric: float | None = None, *, status: str | None = None,
             seconds: float | None = None) -> None:
        """Record what an asked run gave: its `metric`, or for a failed run its `status`
        (crash, nan, timeout, refused) and no metric. A NaN, an infinity or a value past the
        metric limit is recorded as a "nan" run. `seconds` defaults to the time since it was
        asked. ValueError for a run that is not waiting to be told, or a bad outcome."""
        key = (run.step, run.slot)
        if self.result is not None or run.step not in self.study.state.unconcluded:
            raise ValueError(f"run {run.step}:{run.slot} is not one this study is waiting for "
                             "(its step is over, or the study has stopped)")
        if key in self._told:
            raise ValueError(f"run {run.step}:{run.slot} was told already")
        if key not in self._asked:
            raise ValueError(f"run {run.step}:{run.slot} was never asked for")
        plan = self._waiting[key]
        if (run.seed, run.role) != (plan.seed, plan.role):
            raise ValueError(f"run {run.step}:{run.slot} is not the run that was asked for")
        asked, now = self._asked[key], time.time()
        outcome = told_outcome(metric, status, now - asked if seconds is None else seconds)
        outcome = with_extra(outcome, started=asked, finished=now)
        with one_blas_thread():
            del self._waiting[key], self._asked[key]
            self._told.add(key)
            self._feed(record_outcome(self.study, plan, outcome, time.monotonic() - self._session))
            self._drive()

    def close(self) -> None:
        """Release the folder (the runs asked and not told are asked for again next time)."""
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def _drive(self) -> None:
        """Carry out the core's commands until it waits for runs to be told, or stops."""
        while self._queue and self.result is None:
            command = self._queue.pop(0)
            if isinstance(command, Stop):
                self.result = finish(self.study, command.reason, write_report=self.write_report,
                                     rewrite=False)
                self.close()
            elif isinstance(command, Run):
                self._waiting |= {(r.step, r.slot): r for r in command.runs}
            else:
                event = execute(self.study, command)
                if event is not None:
                    self._feed(event)

    def _feed(self, event: Event) -> None:
        self.study.state, more = advance(self.study.state, self.study.rules, event)
        self._queue = more + self._queue


def told_outcome(metric: float | None, status: str | None, seconds: float) -> Outcome:
    """The Outcome of a told run: a metric read as the python env reads a returned value
    (envs.python.metric_of), or a failure status with no metric."""
    if status is None or status == "ok":
        if metric is None:
            raise ValueError("tell needs the run's metric, or status= for a failed run")
        value, read_status, reason = metric_of(metric)
        if read_status == "crash":
            raise ValueError(f"tell: {reason}")
        return Outcome(value, read_status, seconds, None, {"reason": reason} if reason else {})
    if metric is not None:
        raise ValueError(f"a {status!r} run has no metric; got {metric!r}")
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {sorted(STATUSES)}")
    return Outcome(None, status, seconds, None, {"reason": "told by the caller"})
