"""A runner on a simulated clock: the order W machines would finish the runs in, at once."""
from __future__ import annotations

import heapq
import math

import numpy as np

from engine.runner import PlannedRun, Runner, guarded_run, with_extra
from envs import Env, Outcome

SPREAD_STREAM = 11  # a run's duration factor: default_rng([seed, step, slot, SPREAD_STREAM])


class SimulatedRunner(Runner):
    """Runs made here, one at a time and at once, handed back in the order `workers` machines
    would finish them on a simulated clock: no run sleeps. For fleet benchmarks and previews
    with a synthetic env.

    A run starts on the first free worker when the study submits it (or, queued, when a worker
    frees) and takes the seconds its env reports times exp(spread z), z ~ N(0, 1) drawn from the
    run's seed, step and slot: a log-normal spread of run times. Its extra records its simulated
    start and finish (seconds since the runner began) and its worker ("simulated")."""

    kind = "simulated"

    def __init__(self, workers: int = 1, *, lost_retries: int = 2, spread: float = 0.0):
        super().__init__(workers, lost_retries=lost_retries)
        self.spread = spread
        self.clock = 0.0
        self.free_at = [0.0] * workers
        self.queued: list[tuple[Env, PlannedRun]] = []
        self.running: list[tuple[float, int, int, PlannedRun, Outcome]] = []  # a heap

    def duration(self, plan: PlannedRun, outcome: Outcome) -> float:
        z = np.random.default_rng([plan.seed, plan.step, plan.slot, SPREAD_STREAM]) \
            .standard_normal()
        return (outcome.seconds or 0.0) * math.exp(self.spread * z)

    def dispatch(self) -> None:
        """Start queued runs on the workers free at the clock."""
        while self.queued:
            worker = min(range(self.workers), key=lambda k: (self.free_at[k], k))
            if self.free_at[worker] > self.clock:
                return
            env, plan = self.queued.pop(0)
            outcome = guarded_run(self, env, plan)
            finish = self.clock + self.duration(plan, outcome)
            self.free_at[worker] = finish
            outcome = with_extra(outcome, simulated={"start": self.clock, "finish": finish,
                                                     "worker": worker})
            heapq.heappush(self.running, (finish, plan.step, plan.slot, plan, outcome))

    def submit(self, env, plans):
        self.queued += [(env, plan) for plan in plans]
        self.dispatch()

    @property
    def busy(self):
        return len(self.queued) + len(self.running)

    def next_finished(self):
        self.dispatch()
        finish, _, _, plan, outcome = heapq.heappop(self.running)
        self.clock = finish
        return plan, outcome

    def stop(self):
        self.queued, self.running = [], []
        return []
