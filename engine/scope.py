"""What a study changes in its process, for as long as it runs and no longer: one BLAS thread,
and (from the command line only) signal handlers that stop it cleanly."""
from __future__ import annotations

import signal
import threading
from typing import Any

from threadpoolctl import threadpool_limits


def one_blas_thread():
    """One BLAS thread for the scope, and the caller's setting back after it: the posterior's
    matrices are small, and multi-threaded BLAS makes a 200x200 Cholesky far slower on a busy
    2-core machine (experiments/bench_beliefs.py)."""
    return threadpool_limits(limits=1, user_api="blas")


class Interruption:
    """The signal handler: remembers the signal and raises KeyboardInterrupt where the
    program is, so the loop unwinds to a clean stop."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def handle(self, signum, frame):
        self.signal = signum
        raise KeyboardInterrupt

    def install(self) -> dict[int, Any]:
        """Handle SIGINT and SIGTERM, on the main thread only (where Python allows it); the
        handlers replaced, to put back. SIGINT too: a process started in the background by a
        script inherits SIGINT ignored, and Ctrl-C (or kill -INT) must still stop the study."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
