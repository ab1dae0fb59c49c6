"""Runners execute a batch of planned runs and yield each outcome as soon as it is ready.

Yielding per run (not per batch) lets the study record every finished run in the ledger at
once, so a killed study never loses a run that already finished.
"""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from envs import Env, Outcome
from envs.process import kill_running
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


def timed_run(env: Env, config: dict, seed: int) -> Outcome:
    """env.run, with the wall-clock times (epoch seconds) it started and finished in the
    outcome's extra as "started" and "finished": the ledger's times of the run, measured where
    it ran, whatever the env reports as its seconds (a synthetic env's are simulated)."""
    started = time.time()
    outcome = env.run(config, seed)
    return dataclasses.replace(outcome, extra={**outcome.extra, "started": started,
                                               "finished": time.time()})


class Runner:
    kind: ClassVar[str]

    def __init__(self, workers: int = 1):
        self.workers = workers

    def run(self, env: Env, plans: Sequence[PlannedRun]) -> Iterator[tuple[PlannedRun, Outcome]]:
        raise NotImplementedError


class LocalRunner(Runner):
    """One run after another in this process (the env may still start a subprocess)."""

    kind = "local"

    def run(self, env, plans):
        for plan in plans:
            yield plan, timed_run(env, plan.config, plan.seed)


class ParallelRunner(Runner):
    """Up to `workers` runs at once in threads; envs that train do so in their own subprocess.

    Interrupted (a signal raises KeyboardInterrupt in the main thread), it yields the runs that
    had finished, so they are recorded, and kills those in flight, which a resume runs again."""

    kind = "parallel"

    def run(self, env, plans):
        pool = futures.ThreadPoolExecutor(max_workers=self.workers)
        pending = {pool.submit(timed_run, env, plan.config, plan.seed): plan for plan in plans}
        yielded = set()
        try:
            for future in futures.as_completed(pending):
                yielded.add(future)
                yield pending[future], future.result()
        except KeyboardInterrupt:
            finished = [f for f in pending if f.done() and f not in yielded and not f.exception()]
            stop_pool(pool)
            for future in finished:
                yield pending[future], future.result()
            raise
        finally:
            stop_pool(pool)


def stop_pool(pool: futures.ThreadPoolExecutor) -> None:
    """Cancel the runs not started, kill those in flight, and wait for the threads."""
    pool.shutdown(wait=False, cancel_futures=True)
    kill_running()
    pool.shutdown(wait=True)


class RayRunner(Runner):
    """Runs as Ray tasks (a local Ray instance unless RAY_ADDRESS points at a cluster)."""

    kind = "ray"

    def run(self, env, plans):
        try:
            import ray
        except ImportError as exc:  # the extra is optional; say how to get it
            raise RuntimeError("[runner] kind = 'ray' needs Ray: pip install -e '.[ray]'") from exc
        if not ray.is_initialized():
            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
        remote_run = ray.remote(timed_run)
        pending = {remote_run.remote(env, plan.config, plan.seed): plan for plan in plans}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                yield pending.pop(done[0]), ray.get(done[0])
        finally:  # interrupted: no task keeps running (their children are swept on resume)
            for ref in pending:
                ray.cancel(ref, force=True)


RUNNERS: dict[str, type[Runner]] = {r.kind: r for r in (LocalRunner, ParallelRunner, RayRunner)}


def make_runner(kind: str, workers: int) -> Runner:
    return RUNNERS[kind](workers=workers)
