"""Several SMPP binds used as one: submits go to the least loaded bound one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .errors import TransportStopped
from .smpp import SmppClient, SubmitHandle


class SmppPool:
    """N :class:`SmppClient` binds (to one SMSC or several) behind one ``submit``.

    Same service shape as a client: :attr:`name`, :meth:`start`, :meth:`stop`, :meth:`health`.
    """

    def __init__(self, name: str, clients: Sequence[SmppClient]) -> None:
        """``clients`` are started and stopped with the pool."""
        if not clients:
            raise ValueError("an SMPP pool needs at least one bind")
        self.name = name
        self.clients = tuple(clients)

    async def start(self) -> None:
        """Start every bind (each connects in the background)."""
        for client in self.clients:
            await client.start()

    async def wait_bound(self, timeout: float | None = None, *, all_binds: bool = False) -> None:
        """Wait until one bind (or, with ``all_binds``, every bind) is up."""
        waits = [asyncio.ensure_future(c.wait_bound()) for c in self.clients]
        try:
            if all_binds:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*waits)
                return
            done, _ = await asyncio.wait(waits, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise TimeoutError(f"no SMPP bind of {self.name} came up")
            for task in done:
                task.result()
        finally:
            for task in waits:
                task.cancel()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop every bind in parallel, all within ``timeout``."""
        await asyncio.gather(*(c.stop(timeout) for c in self.clients))

    def pick(self) -> SmppClient:
        """The bind with the fewest submits queued or in flight, preferring bound ones."""
        bound = [c for c in self.clients if c.bound]
        return min(bound or self.clients, key=lambda c: c.load)

    async def submit(self, destination: str, text: str, *, source: str | None = None,
                     registered_delivery: bool = True, validity: timedelta | None = None,
                     priority: int = 0, flash: bool = False, service_type: str = "",
                     replace_if_present: bool = False,
                     max_parts: int | None = None) -> SubmitHandle:
        """:meth:`SmppClient.submit` on the least loaded bind."""
        if not self.clients:
            raise TransportStopped("no SMPP binds", destination=destination)
        return await self.pick().submit(destination, text, source=source,
                                        registered_delivery=registered_delivery,
                                        validity=validity, priority=priority, flash=flash,
                                        service_type=service_type,
                                        replace_if_present=replace_if_present,
                                        max_parts=max_parts)

    def health(self) -> dict[str, Any]:
        """Every bind's health, and how many are up."""
        binds = [c.health() for c in self.clients]
        return {"name": self.name, "bound": sum(1 for b in binds if b["bound"]),
                "binds": binds,
                "queued": sum(b["queued"] for b in binds),
                "window_used": sum(b["window_used"] for b in binds)}
