"""Fencing: how a service asks whether this node may still act on what it claimed.

A node that stalls (SIGSTOP, a long GC pause, CPU starvation) for longer than
``[cluster] dead_after_s`` is declared dead by a survivor, which takes its
campaign rows and leases over while the stalled node still believes it holds
them.  Two defences, both needed:

* *local expiry*: a node may act only within ``dead_after_s - heartbeat_s`` of
  the last heartbeat it saw committed (its own monotonic clock, which keeps
  running while the process is stopped).  A node that wakes from a long stall
  therefore knows at once, before any database round trip, that it must not
  act, and confirms with a heartbeat first;
* *fencing tokens*: every (re)start and every takeover bumps the node's
  ``generation``; claims record it and the statements that act (claiming a
  campaign batch, storing its outcomes, renewing a lease) match it, so a stale
  node's writes change nothing.

:class:`Fence` is what a service is handed; ``dispatch.cluster.ClusterService``
implements it.  Without a cluster a service gets no fence and acts freely.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import ColumnElement


class Fence(Protocol):
    """This node's right to act on what it claimed (see the module docs)."""

    @property
    def generation(self) -> int:
        """The fencing token this node announced; claims carry it."""

    def may_act(self) -> bool:
        """True while the last committed heartbeat is recent enough to act on."""

    async def confirm(self, generation: int) -> bool:
        """True if what was claimed under ``generation`` is still this node's to act on
        (beats first when the local window has run out)."""

    def still_mine(self) -> ColumnElement[bool]:
        """SQL that is true only while this node's row carries :attr:`generation`."""
