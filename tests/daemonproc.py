"""Run ``dispatchd`` as a real process, as an administrator would, for the tests.

The daemon logs JSON lines on stderr (it is not a terminal); the helper reads
them to learn the HTTP port (``http listening``) without sleeping or polling.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class DaemonProcess:
    """One ``dispatchd run`` child process and its log lines."""

    def __init__(self, cwd: Path, config: Path | None = None, env: dict[str, str] | None = None,
                 extra: tuple[str, ...] = ()):
        args = [sys.executable, "-m", "dispatch.cli", "run", *extra]
        if config is not None:
            args += ["-c", str(config)]
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._buffer = b""
        self.port: int | None = None

    def read_until(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any] | None:
        """Read log lines until one satisfies ``predicate`` (returned) or the process ends."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                for line in self._drain_lines():
                    if predicate(line):
                        return line
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                if not chunk:
                    for line in self._drain_lines(final=True):
                        if predicate(line):
                            return line
                    return None
                self._buffer += chunk
        finally:
            sel.close()
        raise TimeoutError(f"no matching log line within {timeout}s; got {self.raw[-5:]}")

    def _drain_lines(self, final: bool = False) -> list[dict[str, Any]]:
        out = []
        while b"\n" in self._buffer or (final and self._buffer):
            line, _, self._buffer = self._buffer.partition(b"\n")
            text = line.decode(errors="replace")
            self.raw.append(text)
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                entry = {"msg": text, "level": "raw"}
            self.lines.append(entry)
            out.append(entry)
        return out

    def wait_ready(self, timeout: float = 30.0) -> int:
        """Wait for the HTTP listener; returns its port."""
        line = self.read_until(lambda e: e.get("msg") == "http listening", timeout)
        if line is None:
            raise RuntimeError(f"daemon exited {self.proc.wait()}: {self.raw[-10:]}")
        self.port = int(line["port"])
        return self.port

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the daemon."""
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.read_until(lambda e: False, timeout)  # drain the log until the process ends
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL, for clean-up."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
