"""The run's clock: wall-clock time of this invocation, and training time over the whole run (resumes included).

One object, started when the loop starts, read by the parts that need time: the stop rules (``train.max_time_s``
counts this invocation), the snapshots (``train.snapshot_minutes`` count the whole run's training), the checkpoint
(``trained_s``) and the step log (``time_s``, the monitor's share).
"""

from __future__ import annotations

import time
from typing import Optional

__all__ = ["RunClock"]


class RunClock:
    """``trained_before``: the seconds of training that earlier invocations did (a resumed run's checkpoint)."""

    def __init__(self, trained_before: float = 0.0) -> None:
        self.trained_before = trained_before
        self.t_start = time.perf_counter()

    def start(self) -> None:
        """Now is the start of this invocation's training."""
        self.t_start = time.perf_counter()

    def elapsed(self, now: Optional[float] = None) -> float:
        """Seconds since :meth:`start` (up to ``now``, a ``time.perf_counter()`` reading)."""
        return (time.perf_counter() if now is None else now) - self.t_start

    def trained(self, now: Optional[float] = None) -> float:
        """Seconds of training over the whole run, this invocation's included."""
        return self.trained_before + (time.perf_counter() if now is None else now) - self.t_start
