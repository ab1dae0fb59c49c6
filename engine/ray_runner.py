"""Runs as Ray tasks, on a local instance or a cluster (Ray is an optional extra)."""
from __future__ import annotations

import os
import time

from engine.runner import PlannedRun, Runner, timed_run, with_extra, with_losses
from envs import Env, Outcome


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
        self.pending: dict = {}  # task ref -> (env, plan, losses so far, epoch seconds started)

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

    def start_task(self, env: Env, plan: PlannedRun, losses: list[str], started: float) -> None:
        ray = self.connect()
        remote_run = ray.remote(ray_run).options(
            num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)
        self.pending[remote_run.remote(env, plan.config, plan.seed)] = (env, plan, losses,
                                                                        started)

    def submit(self, env, plans):
        for plan in plans:
            self.start_task(env, plan, [], time.time())

    @property
    def busy(self):
        return len(self.pending)

    def next_finished(self):
        ray = self.connect()
        while True:
            (ref,), _ = ray.wait(list(self.pending), num_returns=1)
            env, plan, losses, started = self.pending.pop(ref)
            try:
                return plan, with_losses(ray.get(ref), losses)
            except ray.exceptions.RayError as error:
                losses.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
                outcome = self.lost(losses, started)
                if outcome is not None:
                    return plan, outcome
                self.start_task(env, plan, losses, started)

    def stop(self):
        """The tasks that had finished are handed back to be recorded (a lost one is made again
        on resume); the rest are force-cancelled, their children swept on resume."""
        finished = []
        if self.pending:
            import ray
            done, running = ray.wait(list(self.pending), num_returns=len(self.pending),
                                     timeout=0)
            for ref in done:
                _, plan, losses, _ = self.pending[ref]
                try:
                    finished.append((plan, with_losses(ray.get(ref), losses)))
                except ray.exceptions.RayError:
                    pass
            for ref in running:
                ray.cancel(ref, force=True)
        self.pending = {}
        return finished

    def close(self) -> None:
        self.stop()
        if self.started_instance:
            import ray
            ray.shutdown()
            self.started_instance = False
