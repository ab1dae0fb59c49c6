"""Runners make planned runs and hand back each outcome as soon as it is ready.

The study submits runs whenever it plans them, from any number of steps, and takes each
finished one as it comes (`next_finished`), so it records every finished run in the ledger at
once and a killed study never loses a run that already finished. The local and parallel
runners are here; Ray's is engine.ray_runner, the simulated clock's engine.simulated, and
engine.runners names them all.
"""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from envs import Env, Outcome
from envs.process import RUN_ENVIRONMENT, kill_running
from train.vocabulary import Role


@dataclass(frozen=True)
class PlannedRun:
    """One run the study has decided to make: where it goes in the ledger and what it runs."""

    step: int
    slot: int
    role: Role
    applied: frozenset[str]
    config: dict
    seed: int


def with_extra(outcome: Outcome, **items) -> Outcome:
    """The outcome with `items` added to its extra (the ledger's free-form record of a run)."""
    return dataclasses.replace(outcome, extra={**outcome.extra, **items})


def timed_run(env: Env, config: dict, seed: int) -> Outcome:
    """env.run, with the wall-clock times (epoch seconds) it started and finished in the
    outcome's extra as "started" and "finished": the ledger's times of the run, measured where
    it ran, whatever the env reports as its seconds (a synthetic env's are simulated)."""
    started = time.time()
    outcome = env.run(config, seed)
    return with_extra(outcome, started=started, finished=time.time())


class Runner:
    """Makes submitted runs, up to `workers` at once, and hands back each (plan, outcome) as it
    finishes.

    A run whose worker fails (the worker process dies, or the env raises instead of returning an
    outcome) is lost, not a result: it is made again, up to `lost_retries` times, and then
    recorded as a crash that says why. A run that succeeds after a loss says so in its extra
    ("lost"), so no loss is silent."""

    kind: ClassVar[str]

    def __init__(self, workers: int = 1, *, lost_retries: int = 2):
        self.workers, self.lost_retries = workers, lost_retries

    def submit(self, env: Env, plans: Sequence[PlannedRun]) -> None:
        """Start these runs, or queue them behind the runs in flight."""
        raise NotImplementedError

    @property
    def busy(self) -> int:
        """The runs submitted and not handed back yet."""
        raise NotImplementedError

    def next_finished(self) -> tuple[PlannedRun, Outcome]:
        """Wait for a run to finish and hand it back (with several, the first by step, slot)."""
        raise NotImplementedError

    def stop(self) -> list[tuple[PlannedRun, Outcome]]:
        """Cancel the queued runs and kill those in flight (a resume makes them again); the
        runs that had finished and were not handed back yet, to record."""
        return []

    def close(self) -> None:
        """Stop, and release what the runner started (a pool of threads, a Ray instance)."""
        self.stop()

    def lost(self, losses: list[str], started: float) -> Outcome | None:
        """None while a lost run may be made again; then the crash that records every loss."""
        if len(losses) <= self.lost_retries:
            return None
        return Outcome(None, "crash", None, None,
                       {"reason": f"its worker failed {len(losses)} times: {losses[-1]}",
                        "lost": losses, "started": started, "finished": time.time()})


def with_losses(outcome: Outcome, losses: list[str]) -> Outcome:
    """The outcome of a run made again after its worker failed, with the failures in its extra."""
    return with_extra(outcome, lost=list(losses)) if losses else outcome


def guarded_run(runner: Runner, env: Env, plan: PlannedRun) -> Outcome:
    """timed_run in this process or thread; an exception out of the env is a lost run."""
    losses: list[str] = []
    started = time.time()
    while True:
        try:
            return with_losses(timed_run(env, plan.config, plan.seed), losses)
        except Exception as error:  # the env's own failures are outcomes; this is not one
            losses.append(f"{type(error).__name__}: {error}")
            crash = runner.lost(losses, started)
            if crash is not None:
                return crash


class LocalRunner(Runner):
    """One run after another in this process (the env may still start a subprocess), made when
    the study asks for the next finished run."""

    kind = "local"

    def __init__(self, workers: int = 1, *, lost_retries: int = 2):
        super().__init__(1, lost_retries=lost_retries)
        self.queued: list[tuple[Env, PlannedRun]] = []

    def submit(self, env, plans):
        self.queued += [(env, plan) for plan in plans]

    @property
    def busy(self):
        return len(self.queued)

    def next_finished(self):
        env, plan = self.queued.pop(0)
        return plan, guarded_run(self, env, plan)

    def stop(self):
        self.queued = []
        return []


class ParallelRunner(Runner):
    """Up to `workers` runs at once in threads; envs that train do so in their own subprocess.

    With `devices` there is one slot per device, and a run holds one while it runs: a process it
    starts on "cuda:N" sees only GPU N (CUDA_VISIBLE_DEVICES=N), on "cpu" no GPU, and the run's
    extra records its device. Stopped, it hands back the runs that had finished, so they are
    recorded, and kills those in flight, which a resume runs again."""

    kind = "parallel"

    def __init__(self, workers: int = 1, *, lost_retries: int = 2,
                 devices: Sequence[str] = ()):
        super().__init__(len(devices) or workers, lost_retries=lost_retries)
        self.devices = tuple(devices)
        self.pool: futures.ThreadPoolExecutor | None = None
        self.free: queue.Queue = queue.Queue()
        self.pending: dict[futures.Future, PlannedRun] = {}

    def run_on_a_device(self, env: Env, plan: PlannedRun) -> Outcome:
        free = self.free
        device = free.get()
        visible = "" if device == "cpu" else device.removeprefix("cuda:")
        token = RUN_ENVIRONMENT.set({"CUDA_VISIBLE_DEVICES": visible})
        try:
            outcome = guarded_run(self, env, plan)
        finally:
            RUN_ENVIRONMENT.reset(token)
            free.put(device)
        return with_extra(outcome, device=device)

    def submit(self, env, plans):
        if self.pool is None:
            self.pool = futures.ThreadPoolExecutor(max_workers=self.workers)
            for device in self.devices:
                self.free.put(device)
        for plan in plans:
            future = (self.pool.submit(self.run_on_a_device, env, plan) if self.devices
                      else self.pool.submit(guarded_run, self, env, plan))
            self.pending[future] = plan

    @property
    def busy(self):
        return len(self.pending)

    def next_finished(self):
        futures.wait(self.pending, return_when=futures.FIRST_COMPLETED)
        future = min((f for f in self.pending if f.done()),
                     key=lambda f: (self.pending[f].step, self.pending[f].slot))
        return self.pending.pop(future), future.result()

    def stop(self):
        """Interrupted (a signal raises KeyboardInterrupt in the main thread): the runs that had
        finished are handed back to be recorded; the rest are cancelled or killed."""
        finished = [(plan, f.result()) for f, plan in self.pending.items()
                    if f.done() and not f.cancelled() and f.exception() is None]
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            kill_running()
            self.pool.shutdown(wait=True)
        self.pool, self.free, self.pending = None, queue.Queue(), {}
        return finished
