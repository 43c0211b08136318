"""When the pretraining loop stops: the step count, the time cap, a signal, a test's ``stop_at_step``, a NaN/inf loss.

Every rule is decided the same on every process (a collective where a process could see it alone: a signal, a NaN),
so that the processes stop at the same step and join the same final checkpoint.

* ``train.steps`` done: the run is finished.
* ``train.max_time_s`` passed (this invocation's time) or ``stop_at_step`` reached: the run stops early, with a
  checkpoint, as if killed there; ``--resume`` continues it.
* SIGTERM/SIGINT (rank 0 catches them): the loop checkpoints at the end of the step and exits with
  ``KeyboardInterrupt`` (nothing is lost); a second signal stops at once.
* A NaN/inf loss on any process: the run stops before the update is applied
  (:meth:`selfsup.engine.guard.CheckpointGuard.poisoned` says which checkpoint is good).
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Optional

import torch

from selfsup.engine.clock import RunClock

__all__ = ["Stop", "StopRules", "SignalCatcher", "any_flag", "all_finite"]


@dataclass(frozen=True)
class Stop:
    """The rules' verdict after a step."""

    done: bool  # train.steps reached
    timed_out: bool  # train.max_time_s passed
    halted: bool  # stop_at_step reached
    signalled: bool  # SIGTERM/SIGINT on some process

    @property
    def any(self) -> bool:
        """The loop ends (or is interrupted) after this step: checkpoint now."""
        return self.done or self.timed_out or self.halted or self.signalled

    @property
    def early(self) -> bool:
        """The loop ends before ``total_steps`` (the result says ``stopped_early``)."""
        return not self.done and (self.timed_out or self.halted)


class StopRules:
    """The stop rules of one invocation; :meth:`arm` catches the signals until :meth:`close`."""

    def __init__(self, fabric, total_steps: int, max_time_s: Optional[float], stop_at_step: Optional[int],
                 clock: RunClock) -> None:
        self.fabric, self.total_steps, self.clock = fabric, total_steps, clock
        self.max_time_s, self.stop_at_step = max_time_s, stop_at_step
        self.signals = SignalCatcher()

    def arm(self) -> None:
        if self.fabric.is_global_zero:
            self.signals.install()

    def close(self) -> None:
        self.signals.restore()

    def finite(self, loss: torch.Tensor) -> bool:
        """The NaN rule: the step's loss is finite on every process."""
        return all_finite(self.fabric, loss)

    def check(self, step: int, now: float) -> Stop:
        """The verdict once ``step`` steps are done, at ``now`` (``time.perf_counter()``); a collective."""
        return Stop(done=step == self.total_steps,
                    timed_out=self.max_time_s is not None and self.clock.elapsed(now) >= self.max_time_s,
                    halted=self.stop_at_step is not None and step >= self.stop_at_step,
                    signalled=any_flag(self.fabric, self.signals.signum is not None))


class SignalCatcher:
    """SIGTERM/SIGINT set :attr:`signum`; the loop checkpoints at the end of the step and exits (nothing is lost). A
    second signal stops at once. Installed in the main thread only (Python allows no other)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self.handle)

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: stop now
            signal.signal(signum, self.previous[signum])
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def any_flag(fabric, flag: bool) -> bool:
    """Whether ``flag`` is true on any process (a collective)."""
    if fabric.world_size == 1:
        return flag
    t = torch.tensor(float(flag), device=fabric.device)
    return bool(fabric.all_reduce(t, reduce_op="max").item() > 0)


def all_finite(fabric, loss: torch.Tensor) -> bool:
    """Whether ``loss`` is finite on every process (a collective)."""
    finite = torch.isfinite(loss.detach()).float()
    if fabric.world_size > 1:
        finite = fabric.all_reduce(finite, reduce_op="min")
    return bool(finite.item() > 0)
