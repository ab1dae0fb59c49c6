"""The words the packages share: trainer backends, run statuses and roles, verdicts, directions.

Each is declared once, here, as a `Literal` type and the tuple of its values (in the order that
messages and docs list them). This module imports nothing of the project, so train/, the bottom
layer, can use it, and so can every package above (envs, memory, policies, engine).
The ledger's CHECK constraints (memory/schema.py) spell the same values out in SQL, as they were
when each table was created; a test keeps them equal to these.
"""

from __future__ import annotations

from typing import Literal, get_args

# The trainer's compute backends; "auto" picks the best one available.
Backend = Literal["auto", "cpu", "cuda", "mps", "mlx"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)

# How a run ended; a metric exists exactly when it is "ok".
RunStatus = Literal["ok", "crash", "timeout", "nan", "refused"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)

# What a run was for: the base config, the candidate of a step, or the incumbent it is paired with.
Role = Literal["candidate", "incumbent", "base"]
ROLES: tuple[Role, ...] = get_args(Role)

# A decision on a candidate; "keep" and "revert" close its trial, "undecided" leaves it open.
FinalVerdict = Literal["keep", "revert"]
Verdict = Literal[FinalVerdict, "undecided"]
FINAL_VERDICTS: tuple[FinalVerdict, ...] = get_args(FinalVerdict)
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

# Whether lower or higher values of the metric are better.
Direction = Literal["lower", "higher"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)

# The largest metric magnitude any layer takes as a measurement: the squares of many such
# values still sum to a finite float64. An env reports a value past it as an exploding run.
METRIC_LIMIT = 1e100

__all__ = [
    "METRIC_LIMIT",
    "BACKENDS", "DIRECTIONS", "FINAL_VERDICTS", "ROLES", "RUN_STATUSES", "VERDICTS",
    "Backend", "Direction", "FinalVerdict", "Role", "RunStatus", "Verdict",
]
