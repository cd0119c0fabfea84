"""Interpreter tuning for the long-running daemon: the event loop and the garbage collector.

The event loop
--------------
``[node] event_loop`` is ``"asyncio"`` by default.  ``"uvloop"`` runs the
daemon on uvloop (``pip install 'dispatchd[fast]'``), ``"auto"`` does so when it
is installed.  Measured with ``bench/sip_b2bua_cpu.py --rate 150 --calls 3000``
(the SIP path alone, CPU per call, runs interleaved on the same busy machine):
2.59, 2.73 and 2.43 ms on asyncio, 2.19, 2.30 and 2.35 ms on uvloop on a busy machine
(3-15 % less), 3.22 against 3.19 ms on a quiet one (1 %).
It is not the default because SIP over TLS does not work on it: baresip never
registers over our TLS listener on uvloop 0.23
(``tests/b2bua/test_b2bua_sipproto.py::test_baresip_registers_and_calls_over_tls``
passes on asyncio, fails on uvloop; cause not found), so a configuration with a
TLS listener and ``"uvloop"`` is refused, and ``"auto"`` stays on asyncio there.
Only UDP/TCP nodes under heavy call load should opt in.

The garbage collector
---------------------
After start-up the daemon's heap holds hundreds of thousands of objects that
live as long as the process (modules, classes, the ORM's mappers and compiled
statements, the HTTP app, rule tables, configuration).  CPython's full (oldest
generation) collection walks all of them: on this daemon one took ~0.15-0.2 s,
a stall of the single event loop in the middle of call set-up (SIP timers
retransmit after 0.5 s), several times a minute under load.  ``gc.freeze()``
once start-up is done moves everything alive into a permanent generation the
collector never scans again, so later full collections only walk what calls
and reports created since; that is what :func:`settle_heap` does.

The young-generation threshold is raised from 700 to :data:`GEN0_THRESHOLD`
allocations: each SIP message allocates dozens of short-lived containers, and a
collection every few hundred allocations mostly re-scans objects that are about
to be freed by reference counting anyway.  Memory cost: at most that many extra
unreachable cycles held a little longer.

Nothing here changes behaviour; it only changes when the collector runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging

__all__ = ["EVENT_LOOPS", "GEN0_THRESHOLD", "check_event_loop", "new_event_loop", "settle_heap"]

log = logging.getLogger(__name__)

GEN0_THRESHOLD = 10_000
"""Allocations (net) between young-generation collections (CPython's default is 700)."""


def settle_heap() -> None:
    """Call once start-up is complete: collect, freeze the survivors, raise gen0's threshold.

    Safe to call again (after a reload, say): what was frozen stays frozen and
    the new survivors join it.
    """
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    log.debug("heap settled", extra={"frozen_objects": gc.get_freeze_count()})


EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""The values of ``[node] event_loop``."""


def check_event_loop(kind: str, tls: bool) -> None:
    """ValueError (one line naming the key) for an unknown kind, ``uvloop`` with a SIP TLS
    listener (see the module docs) or ``uvloop`` not installed."""
    if kind not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {kind!r}; one of {', '.join(EVENT_LOOPS)}")
    if kind == "uvloop" and tls:
        raise ValueError("node.event_loop: SIP over TLS does not work on uvloop; "
                         "use \"asyncio\" (or \"auto\") with a tls listener")
    if kind == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ValueError("node.event_loop: uvloop is not installed "
                             "(pip install 'dispatchd[fast]')") from None


def new_event_loop(kind: str = "asyncio", *, tls: bool = False) -> asyncio.AbstractEventLoop:
    """A new loop of ``kind`` (see the module docs); ``tls``: a SIP TLS listener is
    configured (``auto`` then stays on asyncio).  ValueError as :func:`check_event_loop`."""
    check_event_loop(kind, tls)
    if kind == "uvloop" or (kind == "auto" and not tls):
        try:
            import uvloop
        except ImportError:
            pass  # auto without the extra (uvloop itself was checked above)
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()
