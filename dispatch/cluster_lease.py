"""A service that runs on one node of the cluster at a time, behind a lease.

The radio gateways of a cluster are one lease (``radio``): exactly one node
drives them.  :class:`LeasedService` wraps the radio service:

* *Standing by.*  A node that cannot take the lease fails to start; the service
  manager retries it, and between tries it awaits :meth:`LeasedService.wait_startable`,
  which looks at the lease row every ``heartbeat_s`` (a read: no write, no log,
  no state change) and returns once the lease is free (expired, released by a
  survivor's takeover of its holder, or this node's own).
* *Losing the lease.*  A node that stalled past the lease (or was fenced off,
  see dispatch/fencing.py) stops the inner service at once, unkeying first, and
  goes back to standing by through ``on_standby`` (the service manager marks it
  failed and retries it as above), so it drives the gateways again the next
  time they are free — after a stall, not only after a restart.  The radio
  service's first command on a reopened gateway is a release (TETRA ``ATH``), so
  nothing stays keyed and nothing is keyed twice.
* *Who holds it.*  :func:`lease_holder` names the node that holds a lease now
  and its HTTP URL, for forwarding a command to it (dispatch/cluster_radio.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from dispatch.models import ClusterLeaseRow, ClusterNodeRow

if TYPE_CHECKING:
    from dispatch.cluster import ClusterService

log = logging.getLogger(__name__)


async def lease_free(cluster: ClusterService, name: str) -> bool:
    """True if this node could take lease ``name`` now (free, expired or its own)."""
    now = dt.datetime.fromtimestamp(cluster.clock(), dt.UTC)
    async with cluster.db.session() as s:
        row = (await s.execute(select(ClusterLeaseRow.owner, ClusterLeaseRow.expires_at < now)
                               .where(ClusterLeaseRow.name == name))).first()
    return row is None or row[0] == cluster.node_id or bool(row[1])


async def lease_holder(cluster: ClusterService, name: str) -> tuple[str, str] | None:
    """``(node, http_url)`` of the live node holding lease ``name`` now, if any."""
    now = dt.datetime.fromtimestamp(cluster.clock(), dt.UTC)
    async with cluster.db.session() as s:
        row = (await s.execute(
            select(ClusterLeaseRow.owner, ClusterNodeRow.http_url)
            .join(ClusterNodeRow, ClusterNodeRow.node_id == ClusterLeaseRow.owner)
            .where(ClusterLeaseRow.name == name, ClusterLeaseRow.expires_at >= now,
                   ClusterNodeRow.alive.is_(True)))).first()
    return None if row is None else (str(row[0]), str(row[1] or ""))


class LeasedService:
    """Runs ``inner`` only while this node holds the cluster lease ``lease``.

    The radio gateways are wrapped in one: a node that cannot get the lease
    fails to start (the service manager retries it once :meth:`wait_startable`
    says the lease is free), so when the holder dies its lease expires and a
    survivor starts the gateways.  A node that loses the lease stops the inner
    service and stands by again (``on_standby``).
    """

    def __init__(self, inner: Any, cluster: ClusterService, lease: str, ttl_s: float) -> None:
        """Wrap ``inner`` (a service) behind ``lease``."""
        self.inner, self.cluster, self.lease, self.ttl_s = inner, cluster, lease, ttl_s
        self.name = inner.name
        self.running = False
        self.lost = 0
        #: Called with a reason after the lease was lost and the inner service stopped
        #: (the daemon wires it to ``ServiceManager.standby``: retried like a standby).
        self.on_standby: Callable[[str], None] | None = None
        cluster.on_lease_lost(lease, self._lost)

    async def _lost(self) -> None:
        # Another node drives the gateways now (we stalled past the lease): let go of
        # them at once, unkeying first, so two nodes never key one radio.
        if not self.running:
            return
        self.running = False
        self.lost += 1
        with contextlib.suppress(Exception):
            await self.inner.stop()
        log.warning("this node no longer drives the %s service; standing by to take it "
                    "again when its lease is free", self.name, extra={"lease": self.lease})
        if self.on_standby is not None:
            self.on_standby(f"cluster lease {self.lease!r} lost to another node; standing by")

    async def start(self) -> None:
        """Take the lease, then start the inner service; raise if another node holds it."""
        if not await self.cluster.acquire(self.lease, self.ttl_s):
            raise RuntimeError(f"cluster lease {self.lease!r} is held by another node; "
                               "standing by")
        try:
            await self.inner.start()
        except BaseException:
            await self.cluster.release(self.lease)
            raise
        self.running = True

    async def wait_startable(self) -> None:
        """Return once the lease looks free, looking every ``heartbeat_s`` (at least once).

        The service manager awaits this between start attempts instead of its own
        ``retry_s``: a standby takes the gateways over within a heartbeat of the lease
        coming free, without a failed start (and its log line) every heartbeat.
        """
        while True:
            await asyncio.sleep(self.cluster.heartbeat_s)
            try:
                if await lease_free(self.cluster, self.lease):
                    return
            except Exception as exc:  # a database outage: keep standing by
                log.warning("cannot read the cluster lease %s: %s", self.lease, exc)

    async def stop(self) -> None:
        """Stop the inner service, then give the lease up."""
        self.running = False
        try:
            await self.inner.stop()
        finally:
            with contextlib.suppress(Exception):
                await self.cluster.release(self.lease)

    def may_act(self) -> bool:
        """True while this node drives the inner service and its lease is current."""
        return self.running and self.cluster.holds(self.lease) and self.cluster.may_act()

    def health(self) -> dict[str, Any]:
        """The inner service's health, whether the lease is held, and how often it was lost."""
        inner = getattr(self.inner, "health", None)
        return {**(inner() if callable(inner) else {}), "lease": self.lease,
                "lease_held": self.cluster.holds(self.lease), "lease_lost": self.lost}
