"""Serial links over real ptys: open, data, loss of the adapter, return, stop."""

from __future__ import annotations

import asyncio
import os
import pty
import tty
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.protocol import Protocol

from hardware.serial import SerialLink


class Collect(Protocol):  # type: ignore[misc]
    """Keeps what the device sent."""

    def __init__(self) -> None:
        self.data = b""
        self.arrived = asyncio.Event()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data
        self.arrived.set()


class FakeAdapter:
    """A USB serial adapter played by a pty behind a stable symlink."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master = -1
        self.slave = -1

    def plug(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path.unlink(missing_ok=True)
        os.symlink(os.ttyname(self.slave), self.path)

    def unplug(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.slave)
        os.close(self.master)
        self.master = self.slave = -1


async def test_link_reads_writes_survives_unplug_and_replug(tmp_path: Path, reactor: Any) -> None:
    adapter = FakeAdapter(tmp_path / "ttyUSB0")
    adapter.plug()
    down: asyncio.Queue[str] = asyncio.Queue()
    up = asyncio.Event()
    link = SerialLink("sat1", str(adapter.path), Collect, reactor, baudrate=19200, retry_s=0.05,
                      on_down=down.put_nowait, on_up=up.set)
    await link.start()
    try:
        os.write(adapter.master, b"RING\r\n")
        await asyncio.wait_for(link.protocol.arrived.wait(), 5)
        assert link.protocol.data == b"RING\r\n"
        link.write(b"ATA\r")
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(None, os.read, adapter.master, 64),
                                      5) == b"ATA\r"

        adapter.unplug()
        error = await asyncio.wait_for(down.get(), 5)
        assert str(adapter.path) in error and not link.connected
        with pytest.raises(OSError, match="is not open"):
            link.write(b"AT\r")
        adapter.plug()
        await asyncio.wait_for(up.wait(), 5)
        assert link.connected and link.stats.opens == 2 and link.stats.losses == 1
        os.write(adapter.master, b"OK\r\n")
        await asyncio.wait_for(link.protocol.arrived.wait(), 5)
        assert link.protocol.data == b"OK\r\n"
    finally:
        await link.stop()
        adapter.unplug()
    assert not link.connected and link.health()["connected"] is False


async def test_missing_device_fails_start_with_the_path(tmp_path: Path, reactor: Any) -> None:
    link = SerialLink("modem", str(tmp_path / "nothing"), Collect, reactor)
    with pytest.raises(OSError, match=f"cannot open {tmp_path / 'nothing'}"):
        await link.start()
    assert link.health()["last_error"].startswith("cannot open")


async def test_two_readers_of_one_tty_keep_their_links(tmp_path: Path, reactor: Any) -> None:
    """Bytes taken by another reader of the device are not the device going away.

    Two links on one pty (as two cluster nodes on one radio's port, one of them just
    woken from a stall) are both woken by each write; whichever reads second finds
    nothing.  Twisted took that empty read for the end of the connection; it must only
    be one when the tty is hung up (the adapter pulled, below).
    """
    adapter = FakeAdapter(tmp_path / "ttyUSB0")
    adapter.plug()
    downs: list[str] = []
    links = [SerialLink(f"radio{i}", str(adapter.path), Collect, reactor, retry_s=60,
                        on_down=downs.append) for i in (1, 2)]
    for link in links:
        await link.start()
    try:
        for n in range(20):
            os.write(adapter.master, b"+CTXG: %d\r\n" % n)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert downs == [] and all(link.connected for link in links)
        assert [link.stats.losses for link in links] == [0, 0]
        got = b"".join(link.protocol.data for link in links)
        assert sorted(got.split(b"\r\n")[:-1], key=lambda line: int(line[7:])) == [
            b"+CTXG: %d" % n for n in range(20)]

        adapter.unplug()  # the hang-up still ends both links
        async with asyncio.timeout(5):
            while len(downs) < 2:
                await asyncio.sleep(0.01)
        assert not any(link.connected for link in links)
    finally:
        for link in links:
            await link.stop()
