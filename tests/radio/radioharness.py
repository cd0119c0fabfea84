"""A daemon with a TETRA radio and a satphone, both emulated on real ptys, for the tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from dispatch.auth import Role
from dispatch.config import parse_settings
from dispatch.daemon import Daemon
from dispatch.events import Envelope
from hardware.emulators import AtEmulator, SatellitePhoneEmulator, TetraRadioEmulator

WAIT = 30.0  # generous: on a loaded machine a daemon process can take >10 s to open a gateway


class Plugged:
    """An emulator behind a symlink, so the 'USB adapter' can be pulled and plugged back."""

    def __init__(self, emulator: AtEmulator, link: Path) -> None:
        self.emulator = emulator
        self.link = link
        self.commands: asyncio.Queue[str] = asyncio.Queue()
        emulator.on_command = self.commands.put_nowait

    def plug(self) -> None:
        """Open a fresh pty and point the link at it."""
        tmp = self.link.with_suffix(".new")
        os.symlink(self.emulator.open(), tmp)
        os.replace(tmp, self.link)

    async def command(self, text: str) -> None:
        """Wait until the device has answered ``text``."""
        while await asyncio.wait_for(self.commands.get(), WAIT) != text:
            pass

    def drain(self) -> None:
        """Forget the commands seen so far."""
        while not self.commands.empty():
            self.commands.get_nowait()


class RadioRig:
    """A started daemon, its emulated devices and everything it published."""

    def __init__(self, daemon: Daemon, tetra: Plugged, sat: Plugged) -> None:
        self.daemon = daemon
        self.tetra = tetra
        self.sat = sat
        self.radio = tetra.emulator
        self.phone = sat.emulator
        self.events: asyncio.Queue[Envelope] = asyncio.Queue()
        self.seen: list[Envelope] = []
        daemon.hub.listen(self._seen)
        assert daemon.http.bound is not None
        self.url = f"http://127.0.0.1:{daemon.http.bound[1]}"

    def _seen(self, env: Envelope) -> None:
        self.seen.append(env)
        self.events.put_nowait(env)

    async def expect(self, topic: str, where: Callable[[Any], bool] = lambda e: True) -> Any:
        """The next event of ``topic`` matching ``where`` (its payload)."""
        while True:
            env = await asyncio.wait_for(self.events.get(), WAIT)
            if env.topic == topic and where(env.event):
                return env.event

    async def audited(self, action: str, where: Callable[[Any], bool] = lambda e: True) -> Any:
        """Wait until an audit row with ``action`` is committed (or find it already was)."""
        for env in self.seen:
            if env.topic == "audit.recorded" and env.event.action == action and where(env.event):
                return env.event
        return await self.expect("audit.recorded",
                                 lambda e: e.action == action and where(e))

    async def headers(self, client: httpx.AsyncClient, name: str, role: Role) -> dict[str, str]:
        """A user of ``role`` and their session's headers."""
        await self.daemon.users.add_user(name, role, f"{name}-password", actor="test")
        r = await client.post("/api/v1/auth/login",
                              json={"username": name, "password": f"{name}-password"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}


def radio_settings(tmp_path: Path, db_url: str, tetra: Path, sat: Path,
                   extra: dict[str, Any] | None = None) -> Any:
    """Daemon settings with one TETRA gateway (two talkgroups) and one satphone."""
    return parse_settings({**(extra or {}), **{
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": db_url, "auto_migrate": True},
        "http": {"port": 0}, "ssh": {"port": 0},
        "radio": {
            "gateways": [
                {"name": "tetra1", "kind": "tetra", "device": str(tetra), "issi": "1001",
                 "retry_s": 0.05, "hang_time_s": 0.0, "command_timeout_s": 2.0},
                {"name": "sat1", "kind": "satphone", "device": str(sat), "retry_s": 0.05,
                 "poll_s": 3600.0, "number": "+870772001234"},
            ],
            "talkgroups": [
                {"name": "fire", "gssi": "9001", "gateway": "tetra1", "agency": "119"},
                {"name": "command", "gssi": "9002", "gateway": "tetra1",
                 "min_priority": "commander"},
            ],
        },
    }}, "test")


@asynccontextmanager
async def radio_rig(tmp_path: Path, reactor: Any, db_url: str | None = None,
                    extra: dict[str, Any] | None = None) -> AsyncIterator[RadioRig]:
    """Emulators plugged, daemon started (gateways up); everything closed afterwards."""
    tetra = Plugged(TetraRadioEmulator(), tmp_path / "ttyTETRA0")
    sat = Plugged(SatellitePhoneEmulator(), tmp_path / "ttySAT0")
    tetra.plug()
    sat.plug()
    url = db_url or f"sqlite:///{tmp_path / 'dispatchd.db'}"
    daemon = Daemon(radio_settings(tmp_path, url, tetra.link, sat.link, extra),
                    reactor=reactor)
    await daemon.start()
    try:
        yield RadioRig(daemon, tetra, sat)
    finally:
        await daemon.stop()
        tetra.emulator.close()
        sat.emulator.close()
