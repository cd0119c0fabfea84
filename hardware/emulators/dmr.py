"""A DMR Homebrew Repeater Protocol *master* (as HBlink or a BrandMeister server plays it), on UDP.

It logs peers in (``RPTL`` -> ``RPTACK<salt>``, ``RPTK`` checked against
``sha256(salt + passphrase)`` -> ``RPTACK`` or ``MSTNAK``, ``RPTC`` ->
``RPTACK``), answers ``RPTPING`` with ``MSTPONG``, and lets a test play a
call into a talkgroup: a voice LC header, voice frames and a terminator, as
53-byte ``DMRD`` frames.  ``silent`` makes it stop answering (a master that
vanished); ``close_peers`` sends ``MSTCL``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any


def call_payload(stream: int, seq: int) -> bytes:
    """The stand-in for 33 bytes of AMBE+2 voice in frame ``seq`` of ``stream``."""
    return hashlib.sha256(f"{stream}:{seq}".encode()).digest() + bytes([seq & 0xFF])


@dataclass
class Peer:
    """A peer as the master knows it."""

    peer_id: bytes
    addr: Any
    salt: bytes
    state: str = "login"
    pings: int = 0
    config: bytes = b""


@dataclass
class HomebrewMasterEmulator(asyncio.DatagramProtocol):
    """The master: bind with :meth:`open`, inspect :attr:`peers` and :attr:`received`."""

    passphrase: bytes = b"passw0rd"
    silent: bool = False
    peers: dict[bytes, Peer] = field(default_factory=dict)
    received: list[bytes] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    _waiters: list[tuple[bytes, asyncio.Future[bytes]]] = field(default_factory=list)

    async def wait_for(self, prefix: bytes, timeout: float = 10.0) -> bytes:
        """The next datagram starting with ``prefix`` (tests await this, never sleep)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters.append((prefix, future))
        return await asyncio.wait_for(future, timeout)

    async def open(self) -> int:
        """Bind 127.0.0.1 on a free port; return the port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                           local_addr=("127.0.0.1", 0))
        self.transport = transport
        port: int = transport.get_extra_info("sockname")[1]
        return port

    def close(self) -> None:
        """Unbind."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def send(self, data: bytes, addr: Any) -> None:
        """Write a datagram unless playing dead."""
        if self.transport is not None and not self.silent:
            self.transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Answer one datagram from a peer."""
        self.received.append(data)
        for item in list(self._waiters):
            if data.startswith(item[0]) and not item[1].done():
                item[1].set_result(data)
                self._waiters.remove(item)
        if self.silent:
            return
        for kind, handler in ((b"RPTPING", self._ping), (b"RPTCL", self._closed),
                              (b"RPTL", self._login), (b"RPTK", self._key),
                              (b"RPTC", self._config)):
            if data.startswith(kind):
                handler(data[len(kind):], addr)
                return

    def _login(self, body: bytes, addr: Any) -> None:
        peer = Peer(body[:4], addr, os.urandom(4))
        self.peers[peer.peer_id] = peer
        self.send(b"RPTACK" + peer.salt, addr)

    def _key(self, body: bytes, addr: Any) -> None:
        peer = self.peers.get(body[:4])
        expected = None if peer is None else hashlib.sha256(
            peer.salt + self.passphrase).digest()
        if peer is None or body[4:] != expected:
            self.send(b"MSTNAK" + body[:4], addr)
            self.peers.pop(body[:4], None)
            return
        peer.state = "config"
        self.send(b"RPTACK" + peer.peer_id, addr)

    def _config(self, body: bytes, addr: Any) -> None:
        peer = self.peers.get(body[:4])
        if peer is None or peer.state != "config" or len(body) != 4 + 294:
            self.send(b"MSTNAK" + body[:4], addr)
            return
        peer.state, peer.config = "connected", body[4:]
        self.send(b"RPTACK" + peer.peer_id, addr)

    def _ping(self, body: bytes, addr: Any) -> None:
        peer = self.peers.get(body[:4])
        if peer is None or peer.state != "connected":
            self.send(b"MSTNAK" + body[:4], addr)
            return
        peer.pings += 1
        self.send(b"MSTPONG" + peer.peer_id, addr)

    def _closed(self, body: bytes, addr: Any) -> None:
        self.peers.pop(body[:4], None)

    def connected(self) -> list[Peer]:
        """Peers that finished logging in."""
        return [p for p in self.peers.values() if p.state == "connected"]

    def close_peers(self) -> None:
        """The master shuts down: ``MSTCL`` to every peer."""
        for peer in list(self.peers.values()):
            self.send(b"MSTCL" + peer.peer_id, peer.addr)
        self.peers.clear()

    def play_call(self, source: int, talkgroup: int, *, slot: int = 1, stream: int = 0x1234,
                  voice_frames: int = 3, terminate: bool = True) -> None:
        """A radio talks on ``talkgroup``: header, voice frames, terminator to every peer.

        Each frame's 33-byte payload is :func:`call_payload` of (stream, seq), so a test can
        check that a forwarded frame carries exactly what was played."""
        frames = [(2, 1)] + [(1 if i % 6 == 0 else 0, i % 6) for i in range(voice_frames)]
        if terminate:
            frames.append((2, 2))
        for seq, (frame_type, data_type) in enumerate(frames):
            bits = (0x80 if slot == 2 else 0) | (frame_type << 4) | data_type
            for peer in self.connected():
                self.send(b"DMRD" + bytes([seq & 0xFF]) + source.to_bytes(3, "big")
                          + talkgroup.to_bytes(3, "big") + peer.peer_id + bytes([bits])
                          + stream.to_bytes(4, "big") + call_payload(stream, seq), peer.addr)
