"""The runners by [runner] kind: a new runner is one small file and an entry here."""
from __future__ import annotations

from engine.ray_runner import RayRunner
from engine.runner import LocalRunner, ParallelRunner, Runner
from engine.simulated import SimulatedRunner

RUNNERS: dict[str, type[Runner]] = {
    r.kind: r for r in (LocalRunner, ParallelRunner, RayRunner, SimulatedRunner)}


def make_runner(section) -> Runner:
    """The runner a [runner] section (engine.sections.RunnerSection) describes."""
    options: dict = {"lost_retries": section.lost_retries}
    if section.kind == "parallel":
        options["devices"] = tuple(section.devices)
    if section.kind == "ray":
        options |= {"address": section.address, "cpus_per_run": section.cpus_per_run,
                    "gpus_per_run": section.gpus_per_run}
    if section.kind == "simulated":
        options["spread"] = section.spread
    return RUNNERS[section.kind](section.workers, **options)
