"""A RoIP device emulator: a radio interface that answers SIP calls over UDP on 127.0.0.1.

It plays the box between a radio and the IP network (an Icom VE-PG4
transceiver controller, a JPS ARA-1, a "RoIP-302" gateway): it answers an
INVITE with G.711 + ``telephone-event``, and then

* **PTT from the caller** (``ptt``): RFC 4733 digits (``key_digits`` /
  ``unkey_digits``, matched as sequences like the ARA-1's "SIP actions"), a
  SIP INFO body (``info_key_body`` / ``info_unkey_body``), or ``"vox"``:
  keyed while the audio it receives is loud;
* **what the radio transmits**: every received frame is kept with the keyed
  state at that moment (:attr:`RoipDevice.heard`), so a test proves nothing
  reached the air unkeyed;
* **what the radio receives** (:meth:`RoipDevice.receive_over`): a field
  talker's over as RTP tone frames paced 20 ms apart, bracketed by the COS
  signal (``cos``: DTMF ``cos_open_digits``/``cos_close_digits``, an INFO
  body, or nothing for ``"vox"``);
* **faults**: :meth:`unplug` (silent: every datagram is dropped, as a box
  whose cable was pulled), :meth:`plug`, :meth:`hang_up` (sends BYE),
  ``reject`` (answer INVITEs with that status).

It shares no code with dispatchd's SIP stack (``hardware`` must not import
``telephony``), so the tests hold an independent implementation against ours.
The SIP here is deliberately small: UDP only, one call at a time, responses
built from the request's Via/From/To/Call-ID/CSeq.

``python -m hardware.emulators.roip --port 5070`` serves one until killed and,
with ``--over-every S``, lets a field talker speak a tone every S seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import secrets
import signal
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

RATE = 8000
FRAME = 160
DIGITS = "0123456789*#ABCD"
DTMF_PT = 101
MAX_DATAGRAM = 8192
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
            "l": "content-length", "c": "content-type"}
Signalling = Literal["dtmf", "info", "vox"]


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    b = ~np.arange(256, dtype=np.int32) & 0xFF
    exp, mant = (b >> 4) & 7, b & 0xF
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(b & 0x80, -mag, mag).astype(np.int16)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exp, mant = (a >> 4) & 7, a & 0xF
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


DECODE = {0: _ulaw_decode_table(), 8: _alaw_decode_table()}


def g711_encode(pcm: npt.NDArray[np.int16], pt: int) -> bytes:
    """Encode by the nearest code of the decode table (independent of dispatchd's tables)."""
    table = DECODE[pt]
    order = np.argsort(table, kind="stable")
    values = table[order].astype(np.int32)
    idx = np.clip(np.searchsorted(values, pcm.astype(np.int32)), 1, len(values) - 1)
    below = values[idx - 1]
    pick = np.where(np.abs(pcm - below) <= np.abs(values[idx] - pcm), idx - 1, idx)
    return bytes(order[pick].astype(np.uint8))


def tone(freq: float, frames: int, amplitude: float = 8000.0) -> npt.NDArray[np.int16]:
    """``frames`` 20 ms frames of a sine at 8 kHz."""
    t = np.arange(FRAME * frames) / RATE
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@dataclass
class _Message:
    start: str
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name.lower()), None)

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]


def _parse(data: bytes) -> _Message | None:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            return None
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return _Message(lines[0], headers, body)


@dataclass
class Heard:
    """One frame the radio was handed, and whether it was keyed (on air) at that moment."""

    pcm: npt.NDArray[np.int16]
    keyed: bool


@dataclass
class RoipDevice:
    """The emulated RoIP box (see the module docstring)."""

    ptt: Signalling = "dtmf"
    cos: Signalling = "vox"
    key_digits: str = "*"
    unkey_digits: str = "#"
    cos_open_digits: str = "A"
    cos_close_digits: str = "B"
    info_content_type: str = "application/x-ptt"
    info_key_body: str = "PTT: on"
    info_unkey_body: str = "PTT: off"
    info_cos_open_body: str = "COS: on"
    info_cos_close_body: str = "COS: off"
    vox_rms: float = 300.0
    host: str = "127.0.0.1"
    port: int = 0
    reject: int | None = None
    keyed: bool = False
    unplugged: bool = False
    log: list[tuple[str, str]] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    calls: int = 0
    _sip: Any = None
    _rtp: Any = None
    _call: dict[str, Any] | None = None
    _digits: str = ""
    _seen_events: set[tuple[int, int]] = field(default_factory=set)
    _cseq: int = 100
    _seq: int = 0
    _ts: int = 0
    _answers: dict[str, bytes] = field(default_factory=dict)

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the SIP and RTP sockets."""
        loop = asyncio.get_running_loop()
        self._sip, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self._sip_in), local_addr=(self.host, self.port))
        self._rtp, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self._rtp_in), local_addr=(self.host, 0))
        self.port = self._sip.get_extra_info("sockname")[1]

    def close(self) -> None:
        """Close both sockets."""
        for transport in (self._sip, self._rtp):
            if transport is not None:
                transport.close()

    @property
    def uri(self) -> str:
        """Where to call the device."""
        return f"sip:radio@{self.host}:{self.port}"

    @property
    def in_call(self) -> bool:
        """True while a call is up."""
        return self._call is not None

    def unplug(self) -> None:
        """Drop every datagram from now on (the box's cable is pulled; it stays as it was)."""
        self.unplugged = True

    def plug(self) -> None:
        """Back on the network, the old call forgotten (the box rebooted its SIP stack)."""
        self.unplugged = False
        self._call = None

    def _record(self, what: str, how: str) -> None:
        self.log.append((what, how))
        log.info("roip device: %s (%s)", what, how)

    def _set_keyed(self, on: bool, how: str) -> None:
        self.keyed = on
        self._record("key" if on else "unkey", how)

    # --- SIP ----------------------------------------------------------------------------------

    def _sip_in(self, data: bytes, source: tuple[str, int]) -> None:
        if self.unplugged or len(data) > MAX_DATAGRAM:
            return
        msg = _parse(data)
        if msg is None:
            return
        if msg.start.startswith("SIP/2.0"):
            return  # answers to our BYE/INFO: nothing to do
        method = msg.start.split(" ", 1)[0]
        if method == "ACK":
            self._record("ack", "ACK received")
        branch = (msg.get("via") or "").partition("branch=")[2].split(";")[0]
        key = f"{branch}:{method}"
        if key in self._answers:  # a retransmission: the same answer again
            self._sip.sendto(self._answers[key], source)
            return
        handler = {"INVITE": self._invite, "ACK": lambda m, s: None, "BYE": self._bye,
                   "INFO": self._info, "OPTIONS": self._options,
                   "CANCEL": self._options}.get(method)
        if handler is None:
            self._answer(msg, source, 501, "Not Implemented", key=key)
            return
        handler(msg, source)

    def _answer(self, msg: _Message, source: tuple[str, int], status: int, reason: str,
                body: bytes = b"", extra: tuple[str, ...] = (), key: str | None = None) -> None:
        to = msg.get("to") or ""
        if "tag=" not in to and status > 100:
            tag = self._call["tag"] if self._call else secrets.token_hex(4)
            to = f"{to};tag={tag}"
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in msg.all("via")]
        lines += [f"From: {msg.get('from')}", f"To: {to}", f"Call-ID: {msg.get('call-id')}",
                  f"CSeq: {msg.get('cseq')}", *extra, f"Content-Length: {len(body)}"]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        if key is not None:
            self._answers[key] = data
        self._sip.sendto(data, source)

    def _key(self, msg: _Message) -> str:
        branch = (msg.get("via") or "").partition("branch=")[2].split(";")[0]
        return f"{branch}:{msg.start.split(' ', 1)[0]}"

    def _invite(self, msg: _Message, source: tuple[str, int]) -> None:
        key = self._key(msg)
        if self.reject is not None:
            self._answer(msg, source, self.reject, "Refused", key=key)
            return
        call_id = msg.get("call-id")
        if self._call is not None and self._call["call_id"] != call_id:
            self._answer(msg, source, 486, "Busy Here", key=key)
            return
        sdp = msg.body.decode("utf-8", "replace")
        addr = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
        media = re.search(r"^m=audio (\d+) RTP/AVP ([\d ]+)", sdp, re.M)
        if addr is None or media is None:
            self._answer(msg, source, 488, "Not Acceptable Here", key=key)
            return
        offered = media.group(2).split()
        pt = next((int(p) for p in offered if p in ("0", "8")), None)
        if pt is None:
            self._answer(msg, source, 488, "Not Acceptable Here", key=key)
            return
        dtmf = DTMF_PT
        rtpmap = re.search(r"^a=rtpmap:(\d+) telephone-event/8000", sdp, re.M)
        if rtpmap is not None:
            dtmf = int(rtpmap.group(1))
        self._call = {"call_id": call_id, "tag": secrets.token_hex(4), "pt": pt, "dtmf": dtmf,
                      "remote": (addr.group(1), int(media.group(1))), "sip": source,
                      "from": msg.get("from"), "to": msg.get("to"),
                      "contact": (msg.get("contact") or "").strip("<>")}
        self.calls += 1
        self._digits = ""
        self._record("call", "INVITE answered")
        rtp_port = self._rtp.get_extra_info("sockname")[1]
        name = {0: "PCMU", 8: "PCMA"}[pt]
        answer = (f"v=0\r\no=roip 1 1 IN IP4 {self.host}\r\ns=radio\r\nc=IN IP4 {self.host}\r\n"
                  f"t=0 0\r\nm=audio {rtp_port} RTP/AVP {pt} {dtmf}\r\n"
                  f"a=rtpmap:{pt} {name}/8000\r\na=rtpmap:{dtmf} telephone-event/8000\r\n"
                  f"a=fmtp:{dtmf} 0-16\r\na=ptime:20\r\na=sendrecv\r\n").encode()
        self._answer(msg, source, 200, "OK", answer,
                     (f"Contact: <sip:radio@{self.host}:{self.port}>",
                      "Content-Type: application/sdp"), key=key)

    def _bye(self, msg: _Message, source: tuple[str, int]) -> None:
        if self._call is None or msg.get("call-id") != self._call["call_id"]:
            self._answer(msg, source, 481, "Call/Transaction Does Not Exist", key=self._key(msg))
            return
        self._answer(msg, source, 200, "OK", key=self._key(msg))
        self._record("bye", "BYE received")
        self._call = None

    def _options(self, msg: _Message, source: tuple[str, int]) -> None:
        if msg.get("to") and "tag=" in (msg.get("to") or "") and (
                self._call is None or msg.get("call-id") != self._call["call_id"]):
            self._answer(msg, source, 481, "Call/Transaction Does Not Exist", key=self._key(msg))
            return
        self._answer(msg, source, 200, "OK", key=self._key(msg))

    def _info(self, msg: _Message, source: tuple[str, int]) -> None:
        if self._call is None or msg.get("call-id") != self._call["call_id"]:
            self._answer(msg, source, 481, "Call/Transaction Does Not Exist", key=self._key(msg))
            return
        kind = (msg.get("content-type") or "").split(";")[0].strip().lower()
        lines = {" ".join(line.split()).lower()
                 for line in msg.body.decode("utf-8", "replace").splitlines()}
        ok = self.ptt == "info" and kind == self.info_content_type
        if ok and self.info_key_body.lower() in lines:
            self._set_keyed(True, "info")
        elif ok and self.info_unkey_body.lower() in lines:
            self._set_keyed(False, "info")
        else:
            self._answer(msg, source, 415, "Unsupported Media Type", key=self._key(msg))
            return
        self._answer(msg, source, 200, "OK", key=self._key(msg))

    def _request(self, method: str, extra: tuple[str, ...] = (), body: bytes = b"") -> None:
        """A request of ours in the call (BYE, INFO)."""
        call = self._call
        if call is None or self.unplugged:
            return
        self._cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(6)
        lines = [f"{method} {call['contact']} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch}",
                 "Max-Forwards: 70", f"From: {call['to']};tag={call['tag']}",
                 f"To: {call['from']}", f"Call-ID: {call['call_id']}",
                 f"CSeq: {self._cseq} {method}", *extra, f"Content-Length: {len(body)}"]
        self._sip.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body, call["sip"])

    def hang_up(self) -> None:
        """The box ends the call (BYE)."""
        self._request("BYE")
        self._record("hangup", "BYE sent")
        self._call = None

    # --- RTP ----------------------------------------------------------------------------------

    def _rtp_in(self, data: bytes, source: tuple[str, int]) -> None:
        call = self._call
        if self.unplugged or call is None or len(data) < 12 or len(data) > 2048:
            return
        first, second, _seq, ts, _ssrc = struct.unpack("!BBHII", data[:12])
        if first >> 6 != 2:
            return
        pt = second & 0x7F
        payload = data[12 + 4 * (first & 0x0F):]
        if pt == call["dtmf"] and len(payload) == 4:
            self._event(payload, ts)
        elif pt == call["pt"]:
            pcm = DECODE[pt][np.frombuffer(payload, dtype=np.uint8)]
            if self.ptt == "vox":
                loud = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) >= self.vox_rms
                if loud != self.keyed:
                    self._set_keyed(loud, "vox")
            self.heard.append(Heard(pcm, self.keyed))

    def _event(self, payload: bytes, ts: int) -> None:
        code = payload[0]
        if code >= len(DIGITS) or (code, ts) in self._seen_events:
            return
        self._seen_events.add((code, ts))
        self._digits = (self._digits + DIGITS[code])[-16:]
        self._record("digit", DIGITS[code])
        if self.ptt != "dtmf":
            return
        if self._digits.endswith(self.key_digits):
            self._digits = ""
            self._set_keyed(True, "dtmf")
        elif self._digits.endswith(self.unkey_digits):
            self._digits = ""
            self._set_keyed(False, "dtmf")

    def _send_rtp(self, pt: int, payload: bytes, *, marker: bool = False,
                  advance: int = FRAME) -> None:
        call = self._call
        if call is None or self.unplugged:
            return
        self._seq = (self._seq + 1) & 0xFFFF
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, self._seq,
                             self._ts, 0x524F4950)
        self._rtp.sendto(header + payload, call["remote"])
        self._ts = (self._ts + advance) & 0xFFFFFFFF

    def send_digits(self, digits: str) -> None:
        """RFC 4733 events to the caller (one start, three ends each)."""
        call = self._call
        if call is None:
            return
        for digit in digits:
            code = DIGITS.index(digit)
            for i, duration in enumerate((160, 800, 800, 800)):
                flags = (0x80 if i else 0) | 10
                self._send_rtp(call["dtmf"], struct.pack("!BBH", code, flags, duration),
                               marker=i == 0, advance=0)
            self._ts = (self._ts + 960) & 0xFFFFFFFF

    def send_frame(self, pcm: npt.NDArray[np.int16]) -> None:
        """One 20 ms frame of received radio audio to the caller."""
        if self._call is not None:
            self._send_rtp(self._call["pt"], g711_encode(pcm, self._call["pt"]))

    def _cos(self, open_: bool) -> None:
        if self.cos == "dtmf":
            self.send_digits(self.cos_open_digits if open_ else self.cos_close_digits)
        elif self.cos == "info":
            body = self.info_cos_open_body if open_ else self.info_cos_close_body
            self._request("INFO", (f"Content-Type: {self.info_content_type}",), body.encode())
        self._record("cos", "open" if open_ else "closed")

    async def receive_over(self, freq: float, frames: int, amplitude: float = 8000.0) -> None:
        """A field talker speaks: COS open, ``frames`` tone frames 20 ms apart, COS closed."""
        self._cos(True)
        pcm = tone(freq, frames, amplitude)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(frames):
            self.send_frame(pcm[i * FRAME:(i + 1) * FRAME])
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
        self._cos(False)

    def heard_on_air(self) -> npt.NDArray[np.int16]:
        """Every sample the radio transmitted (received while keyed)."""
        parts = [h.pcm for h in self.heard if h.keyed]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def loud_unkeyed(self, rms: float = 100.0) -> int:
        """How many frames with audio (not silence) arrived while the radio was not keyed."""
        return sum(1 for h in self.heard if not h.keyed and
                   float(np.sqrt(np.mean(h.pcm.astype(np.float64) ** 2))) >= rms)


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, on_data: Any) -> None:
        self.on_data = on_data

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self.on_data(data, (str(addr[0]), int(addr[1])))
        except Exception:  # an emulator must survive whatever it is sent
            log.exception("roip emulator: datagram handling failed")


async def serve(args: argparse.Namespace) -> None:
    """Serve one device until SIGINT/SIGTERM, with a field talker every ``over_every`` s."""
    device = RoipDevice(ptt=args.ptt, cos=args.cos, port=args.port)
    await device.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("ready %s", device.uri)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.over_every or None)
            if not stop.is_set() and device.in_call and not device.keyed:
                await device.receive_over(args.tone, 100)
    finally:
        device.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m hardware.emulators.roip``: serve until a signal; 0."""
    parser = argparse.ArgumentParser(prog="python -m hardware.emulators.roip",
                                     description="Serve an emulated RoIP device (SIP/UDP).")
    parser.add_argument("--port", type=int, default=5070)
    parser.add_argument("--ptt", choices=("dtmf", "info", "vox"), default="dtmf")
    parser.add_argument("--cos", choices=("dtmf", "info", "vox"), default="vox")
    parser.add_argument("--over-every", type=float, default=0.0,
                        help="a field talker speaks (2 s of tone) every so many seconds")
    parser.add_argument("--tone", type=float, default=700.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
