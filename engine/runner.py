"""Runners execute a batch of planned runs and yield each outcome as soon as it is ready.

Yielding per run (not per batch) lets the study record every finished run in the ledger at
once, so a killed study never loses a run that already finished.
"""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import os
import queue
import time
from collections.abc import Iterator, Sequence
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
    """Makes planned runs and yields each (plan, outcome) as it finishes.

    A run whose worker fails (the worker process dies, or the env raises instead of returning an
    outcome) is lost, not a result: it is made again, up to `lost_retries` times, and then
    recorded as a crash that says why. A run that succeeds after a loss says so in its extra
    ("lost"), so no loss is silent."""

    kind: ClassVar[str]

    def __init__(self, workers: int = 1, *, lost_retries: int = 2):
        self.workers, self.lost_retries = workers, lost_retries

    def run(self, env: Env, plans: Sequence[PlannedRun]) -> Iterator[tuple[PlannedRun, Outcome]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runner started (nothing, unless it started a Ray instance)."""

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
    """One run after another in this process (the env may still start a subprocess)."""

    kind = "local"

    def run(self, env, plans):
        for plan in plans:
            yield plan, guarded_run(self, env, plan)


class ParallelRunner(Runner):
    """Up to `workers` runs at once in threads; envs that train do so in their own subprocess.

    With `devices` there is one slot per device, and a run holds one while it runs: a process it
    starts on "cuda:N" sees only GPU N (CUDA_VISIBLE_DEVICES=N), on "cpu" no GPU, and the run's
    extra records its device. Interrupted (a signal raises KeyboardInterrupt in the main
    thread), it yields the runs that had finished, so they are recorded, and kills those in
    flight, which a resume runs again."""

    kind = "parallel"

    def __init__(self, workers: int = 1, *, lost_retries: int = 2,
                 devices: Sequence[str] = ()):
        super().__init__(len(devices) or workers, lost_retries=lost_retries)
        self.devices = tuple(devices)

    def run_on_a_device(self, env: Env, plan: PlannedRun, free: queue.Queue) -> Outcome:
        device = free.get()
        visible = "" if device == "cpu" else device.removeprefix("cuda:")
        token = RUN_ENVIRONMENT.set({"CUDA_VISIBLE_DEVICES": visible})
        try:
            outcome = guarded_run(self, env, plan)
        finally:
            RUN_ENVIRONMENT.reset(token)
            free.put(device)
        return with_extra(outcome, device=device)

    def run(self, env, plans):
        pool = futures.ThreadPoolExecutor(max_workers=self.workers)
        if self.devices:
            free: queue.Queue = queue.Queue()
            for device in self.devices:
                free.put(device)
            pending = {pool.submit(self.run_on_a_device, env, plan, free): plan
                       for plan in plans}
        else:
            pending = {pool.submit(guarded_run, self, env, plan): plan for plan in plans}
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


def ray_run(env: Env, config: dict, seed: int) -> Outcome:
    """timed_run inside a Ray task, with the node it ran on and the GPUs Ray gave it in its
    extra ("node", "gpus"): with mixed hardware, where each run was made."""
    import ray

    outcome = timed_run(env, config, seed)
    return with_extra(outcome, node=ray.get_runtime_context().get_node_id(),
                      gpus=[str(gpu) for gpu in ray.get_gpu_ids()])


class RayRunner(Runner):
    """Runs as Ray tasks, each reserving `cpus_per_run` CPUs and `gpus_per_run` GPUs.

    It joins the cluster at `address` ("auto" or a URL), or at RAY_ADDRESS when that is set;
    with neither it starts a local instance of `workers` CPUs, which `close` shuts down. Ray
    refuses a CPU count from a client that joins a cluster, so none is passed then. A task whose
    worker or node dies is a lost run (Runner), made again by this runner, not by Ray, so that
    each run is recorded once. Each run's extra names its node and GPUs (`ray_run`)."""

    kind = "ray"

    def __init__(self, workers: int = 1, *, lost_retries: int = 2, address: str = "",
                 cpus_per_run: float = 1.0, gpus_per_run: float = 0.0):
        super().__init__(workers, lost_retries=lost_retries)
        self.address, self.cpus_per_run, self.gpus_per_run = address, cpus_per_run, gpus_per_run
        self.started_instance = False

    def connect(self):
        try:
            import ray
        except ImportError as exc:  # the extra is optional; say how to get it
            raise RuntimeError("[runner] kind = 'ray' needs Ray: pip install -e '.[ray]'") from exc
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS", "")
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
                self.started_instance = True
        return ray

    def run(self, env, plans):
        ray = self.connect()
        remote_run = ray.remote(ray_run).options(
            num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)
        submit = lambda plan: remote_run.remote(env, plan.config, plan.seed)  # noqa: E731
        pending = {submit(plan): (plan, [], time.time()) for plan in plans}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                plan, losses, started = pending.pop(ref)
                try:
                    outcome = with_losses(ray.get(ref), losses)
                except ray.exceptions.RayError as error:
                    losses.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
                    outcome = self.lost(losses, started)
                    if outcome is None:
                        pending[submit(plan)] = (plan, losses, started)
                        continue
                yield plan, outcome
        finally:  # interrupted: no task keeps running (their children are swept on resume)
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_instance:
            import ray
            ray.shutdown()
            self.started_instance = False


RUNNERS: dict[str, type[Runner]] = {r.kind: r for r in (LocalRunner, ParallelRunner, RayRunner)}


def make_runner(section) -> Runner:
    """The runner a [runner] section (engine.sections.RunnerSection) describes."""
    options: dict = {"lost_retries": section.lost_retries}
    if section.kind == "parallel":
        options["devices"] = tuple(section.devices)
    if section.kind == "ray":
        options |= {"address": section.address, "cpus_per_run": section.cpus_per_run,
                    "gpus_per_run": section.gpus_per_run}
    return RUNNERS[section.kind](section.workers, **options)
