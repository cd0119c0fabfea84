"""Service lifecycle: start in dependency order, stop in reverse, report health.

A service is anything with ``name``, ``async start()`` and ``async stop()``
(and optionally ``health() -> dict``): the SIP stack, a radio gateway, the SMS
engine, the HTTP server.  Services of other packages satisfy the
:class:`Service` protocol structurally and never import this module.

A *required* service that fails to start stops the daemon (exit code 1); an
*optional* one is marked failed in ``/health`` and retried in the background
every ``retry_s`` seconds (or whenever its ``wait_startable()`` returns), while
everything else keeps running.  An optional service that stops running on its
own (a cluster node that lost the radio lease) is put back on that retry with
:meth:`ServiceManager.standby`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from dispatch.events import ServiceStateChanged

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 3.0


@runtime_checkable
class Service(Protocol):
    """What the daemon needs of a service."""

    name: str

    async def start(self) -> None:
        """Start; raise if the service cannot run."""

    async def stop(self) -> None:
        """Stop and release everything; must not raise."""


class State(enum.StrEnum):
    """Where a service is in its life."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


class RequiredServiceFailed(Exception):
    """A required service could not start; the daemon must stop."""


@dataclass
class _Entry:
    service: Service
    required: bool
    retry_s: float | None
    state: State = State.PENDING
    last_error: str | None = None
    since: float = field(default_factory=time.time)
    retry_task: asyncio.Task[None] | None = None


def describe_error(exc: BaseException) -> str:
    """A one-line description of an exception for logs and ``/health``."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError | RuntimeError) else f"{type(exc).__name__}: {text}"


class ServiceManager:
    """Owns the services of one daemon and their states."""

    def __init__(self, publish: Callable[[object], object], clock: Callable[[], float]) -> None:
        """``publish`` announces state changes; ``clock`` stamps them."""
        self._publish = publish
        self._clock = clock
        self._entries: list[_Entry] = []

    def add(self, service: Service, *, required: bool, retry_s: float | None = None) -> None:
        """Register a service; start order is registration order."""
        self._entries.append(_Entry(service, required, retry_s, since=self._clock()))

    def _set(self, entry: _Entry, state: State, error: str | None = None) -> None:
        entry.state, entry.last_error, entry.since = state, error, self._clock()
        self._publish(ServiceStateChanged(entry.service.name, state.value, entry.required, error))

    async def start_all(self) -> None:
        """Start every service in order; raise :class:`RequiredServiceFailed`."""
        for entry in self._entries:
            if not await self._start(entry):
                if entry.required:
                    raise RequiredServiceFailed(
                        f"required service {entry.service.name} failed to start: "
                        f"{entry.last_error}"
                    )
                self._schedule_retry(entry)

    async def _start(self, entry: _Entry) -> bool:
        name = entry.service.name
        self._set(entry, State.STARTING)
        try:
            await entry.service.start()
        except Exception as exc:
            self._set(entry, State.FAILED, describe_error(exc))
            level = logging.ERROR if entry.required else logging.WARNING
            log.log(level, "service failed to start",
                    extra={"service": name, "error": entry.last_error})
            # A half-started service may hold resources: let it release them.
            await self._stop_quietly(entry)
            return False
        self._set(entry, State.RUNNING)
        log.info("service started", extra={"service": name})
        return True

    def _schedule_retry(self, entry: _Entry) -> None:
        if entry.retry_s is None or (entry.retry_task is not None
                                     and not entry.retry_task.done()):
            return
        # A service may say when a start could succeed (a cluster standby waits for its
        # lease to come free); otherwise every retry_s.
        startable = getattr(entry.service, "wait_startable", None)

        async def retry() -> None:
            assert entry.retry_s is not None
            while entry.state is State.FAILED:
                if callable(startable):
                    await startable()
                else:
                    await asyncio.sleep(entry.retry_s)
                if entry.state is State.FAILED and await self._start(entry):
                    return

        entry.retry_task = asyncio.get_running_loop().create_task(
            retry(), name=f"retry-{entry.service.name}"
        )

    def mark_failed(self, name: str, error: str) -> None:
        """A running service reports that it broke (e.g. its device vanished)."""
        entry = self._entry(name)
        self._set(entry, State.FAILED, error)
        if not entry.required:
            log.warning("service failed", extra={"service": name, "error": error})

    def standby(self, name: str, error: str) -> None:
        """A running service let go of what it ran (a lost cluster lease): it is marked
        failed and retried as after a failed start (optional services only)."""
        entry = self._entry(name)
        if entry.state is not State.RUNNING:
            return
        self._set(entry, State.FAILED, error)
        log.warning("service stopped; standing by", extra={"service": name, "error": error})
        if not entry.required:
            self._schedule_retry(entry)

    def mark_running(self, name: str) -> None:
        """A service reports that it recovered by itself."""
        self._set(self._entry(name), State.RUNNING)

    def _entry(self, name: str) -> _Entry:
        for entry in self._entries:
            if entry.service.name == name:
                return entry
        raise KeyError(name)

    async def stop_all(self) -> None:
        """Stop every started service, newest first, each within a timeout."""
        for entry in reversed(self._entries):
            if entry.retry_task is not None:
                entry.retry_task.cancel()
            if entry.state in (State.RUNNING, State.FAILED, State.STARTING):
                self._set(entry, State.STOPPING)
                await self._stop_quietly(entry)
                self._set(entry, State.STOPPED)

    async def _stop_quietly(self, entry: _Entry) -> None:
        try:
            # A service that must flush data it holds (the SIP record writer) may ask for
            # longer with a ``stop_timeout`` attribute; everything else gets the default.
            timeout = float(getattr(entry.service, "stop_timeout", STOP_TIMEOUT_S))
            async with asyncio.timeout(timeout):
                await entry.service.stop()
        except Exception:
            log.exception("service failed to stop cleanly", extra={"service": entry.service.name})

    def health(self) -> dict[str, Any]:
        """Readiness of every service with its last error, for ``/health``."""
        services: dict[str, Any] = {}
        for entry in self._entries:
            item: dict[str, Any] = {
                "state": entry.state.value,
                "required": entry.required,
                "last_error": entry.last_error,
                "since": entry.since,
            }
            detail = getattr(entry.service, "health", None)
            if callable(detail):
                try:
                    item["detail"] = detail()
                except Exception as exc:
                    item["detail"] = {"error": describe_error(exc)}
            services[entry.service.name] = item
        ready = all(
            e.state is State.RUNNING for e in self._entries if e.required
        )
        return {"ready": ready, "services": services}

    def states(self) -> dict[str, State]:
        """Each service's state, by name."""
        return {e.service.name: e.state for e in self._entries}
