"""Overload control: shed new calls with 503 before the B2BUA collapses.

Theory of operation
-------------------
A B2BUA past its CPU ceiling does not slow down gracefully: its answers come
late, the carrier retransmits every INVITE (RFC 3261 timer A), the
retransmissions cost more CPU, and soon *every* call fails (the cluster bench
saw a lone survivor of a node death fail all 3,360 calls offered to it).  A
503 with ``Retry-After`` costs a fraction of a call and lets the carrier's
overflow routing take the call to the backup centre, so the calls already
admitted, and the emergency calls still admitted, complete.

The signal is the event loop's lag: how late a 50 ms timer fires.  A loop
keeping up fires it within a few ms; a saturated one runs it after every
callback already queued, so the lag is the backlog every new packet waits
behind.  :class:`OverloadGuard` is the sans-I/O core: it is given lag samples
and answers, per new call, whether to admit it:

* lag above ``shed_lag_s`` within the last ``hold_s``: calls below
  ``keep_priority`` (12345 = 10, 122 = 20 by default) get 503; 110/119/120
  (30) still come in;
* lag above ``shed_all_lag_s`` (0 = never) within the last ``hold_s``: every
  new call gets 503, emergency calls too -- the carrier sends them on to the
  backup centre instead of letting them die in our queue.

``hold_s`` keeps shedding on for a while after the last late sample, so the
guard does not flap with every sample.  :class:`LoopLagMonitor` is the asyncio
driver.  Calls already admitted are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoopLagMonitor", "OverloadGuard", "OverloadSettings"]


@dataclass(frozen=True)
class OverloadSettings:
    """When to shed (see the module docstring); lags in seconds."""

    shed_lag_s: float = 0.3
    shed_all_lag_s: float = 2.0
    keep_priority: int = 30
    hold_s: float = 2.0
    retry_after_s: int = 5


class OverloadGuard:
    """Admit or shed new calls from recent event-loop lag (sans-I/O)."""

    def __init__(self, settings: OverloadSettings) -> None:
        """No lag seen yet: everything is admitted."""
        self.settings = settings
        self._shed_until = float("-inf")
        self._shed_all_until = float("-inf")
        self.last_lag = 0.0
        self.max_lag = 0.0
        self.counts = {"shed": 0, "shed_emergency": 0, "overloads": 0}

    def sample(self, now: float, lag: float) -> None:
        """The loop ran a timer ``lag`` seconds late at ``now``."""
        s = self.settings
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        if s.shed_lag_s > 0 and lag >= s.shed_lag_s:
            if now >= self._shed_until:
                self.counts["overloads"] += 1
            self._shed_until = now + s.hold_s
        if s.shed_all_lag_s > 0 and lag >= s.shed_all_lag_s:
            self._shed_all_until = now + s.hold_s

    def state(self, now: float) -> str:
        """``"ok"``, ``"shedding"`` (below keep_priority) or ``"shedding_all"``."""
        if now < self._shed_all_until:
            return "shedding_all"
        if now < self._shed_until:
            return "shedding"
        return "ok"

    def admit(self, now: float, priority: int) -> bool:
        """Whether a new call of ``priority`` may come in now (counted when it may not)."""
        state = self.state(now)
        if state == "ok" or (state == "shedding" and priority >= self.settings.keep_priority):
            return True
        self.counts["shed"] += 1
        if priority >= self.settings.keep_priority:
            self.counts["shed_emergency"] += 1
        return False

    def health(self, now: float) -> dict[str, object]:
        """State, lags (ms) and counters for /health."""
        return {"state": self.state(now), "last_lag_ms": round(self.last_lag * 1000, 1),
                "max_lag_ms": round(self.max_lag * 1000, 1), **self.counts}


class LoopLagMonitor:
    """Feeds an :class:`OverloadGuard` with the lag of a periodic timer on the running loop."""

    def __init__(self, guard: OverloadGuard, clock: Callable[[], float] | None = None,
                 interval_s: float = 0.05) -> None:
        """``clock``: monotonic seconds (the loop's own clock by default)."""
        self.guard = guard
        self.interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Monotonic seconds, the guard's time base."""
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="sip-overload-monitor")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            due = self.now() + self.interval_s
            await asyncio.sleep(self.interval_s)
            now = self.now()
            self.guard.sample(now, max(0.0, now - due))
