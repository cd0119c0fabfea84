"""The HTTP listener: uvicorn serving the API on the daemon's own loop.

The socket is bound in :meth:`HttpService.start`, so a port already in use
fails the start (and, the HTTP service being required, stops the daemon with
a clear message) instead of failing later in the background.  uvicorn's own
signal handling is switched off: the daemon owns SIGTERM/SIGINT/SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

GRACEFUL_S = 2


def listen_tcp(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A listening TCP socket whose accepted connections asyncio will set TCP_NODELAY on.

    ``socket.create_server`` leaves the protocol number 0, and asyncio only sets
    TCP_NODELAY on sockets whose protocol is IPPROTO_TCP: without it a response
    written in two parts (headers, body) waits ~40 ms for a delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpService:
    """A required service: the API, WebSocket events, health and metrics."""

    name = "http"

    def __init__(self, app_factory: Callable[[], Any], host: str, port: int) -> None:
        """``app_factory`` builds the ASGI app when the service starts."""
        self._app_factory = app_factory
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        """Bind the socket and serve; raise ``OSError`` if the address is taken."""
        try:
            sock = listen_tcp(self.host, self.port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(f"cannot listen on {self.host}:{self.port}: {reason}") from None
        sock.setblocking(False)
        self._socket = sock
        self.bound = sock.getsockname()[:2]
        config = uvicorn.Config(
            self._app_factory(),
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="none",
            ws="websockets-sansio",
            timeout_graceful_shutdown=GRACEFUL_S,
            server_header=False,
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="http"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("HTTP server stopped during start")
            await asyncio.sleep(0.01)
        log.info("http listening", extra={"host": self.bound[0], "port": self.bound[1]})

    async def stop(self) -> None:
        """Stop accepting, let requests finish for a moment, then close."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                async with asyncio.timeout(GRACEFUL_S + 1):
                    await self._task
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        if self._socket is not None:
            self._socket.close()

    def health(self) -> dict[str, Any]:
        """Where we listen."""
        return {"listen": f"{self.bound[0]}:{self.bound[1]}" if self.bound else None}
