"""The SIP call to a RoIP device: one permanent dialog over UDP and its RTP stream.

Theory of operation
-------------------
:class:`SipRadioLink` is the thin adapter under :class:`radio.roip.RoipGateway`
(``dispatch`` hands :func:`open_link` to the gateway; ``radio`` never imports us).
It places one call (we are the UAC) to the device and keeps it:

* **set-up** (:meth:`SipRadioLink.open`): an INVITE offering the configured
  G.711 codec and ``telephone-event``, retransmitted on timer A (T1 doubling)
  until a response arrives; a provisional then a final response within
  ``invite_timeout_s`` (a CANCEL goes out if it never comes).  A 2xx is
  ACKed and its SDP answer gives the RTP address; anything else is a
  :class:`RoipLinkError` (an ``OSError``: the gateway retries).
* **in the dialog**: OPTIONS every ``keepalive_s`` (no answer within
  ``request_timeout_s``, a 408 or a 481 means the device is gone); INFO we send
  (PTT signalling) is retransmitted like any non-INVITE request and its answer
  awaited in the background; from the device, BYE (gone), INFO (handed to
  ``on_info``), OPTIONS and re-INVITE are answered, anything else 501 or 481.
* **RTP**: 20 ms G.711 frames out (:meth:`SipRadioLink.send_audio`), RFC 4733
  telephone-events out (:meth:`SipRadioLink.send_dtmf`); in, G.711 of any
  packet time is decoded and re-cut into 20 ms frames for ``on_audio``, and
  telephone-events become digits for ``on_digit``.  RTP from any host other
  than the device's is dropped.
* **loss**: ``on_lost(why)`` is called once per call (BYE, keep-alive
  failure, ICMP unreachable); the owner closes the link and dials again.

Every datagram is bounded (SIP limits of :mod:`telephony.sip.message`, RTP
:data:`~telephony.media.rtp.MAX_DATAGRAM`); a malformed one is counted and
dropped.  Nothing here reads a wall clock: timers are the loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from telephony.media import g711
from telephony.media.dtmf import DIGITS, DtmfReceiver, TelephoneEvent, build_telephone_event
from telephony.media.errors import MediaError
from telephony.media.rtp import RtpPacket, build_rtp, is_rtcp, parse_rtp
from telephony.media.sdp import (
    PCMA,
    PCMU,
    Codec,
    LocalMedia,
    Negotiated,
    SdpError,
    accept_answer,
    answer_offer,
    build_sdp,
    make_offer,
    parse_sdp,
)
from telephony.sip.dialog import Dialog, DialogState
from telephony.sip.errors import SipError
from telephony.sip.headers import Headers
from telephony.sip.message import (
    SipRequest,
    SipResponse,
    build_ack_for_failure,
    build_cancel,
    build_response,
    make_via,
    new_branch,
    parse_message,
)
from telephony.sip.uri import SipUri, parse_uri

__all__ = ["LinkOptions", "LinkSettings", "RoipLinkError", "SipRadioLink", "open_link"]

log = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
FRAME_SAMPLES = 160
CODECS = {"PCMU": PCMU, "PCMA": PCMA}


class RoipLinkError(ConnectionError):
    """The device cannot be reached or refused the call (an ``OSError``: retried)."""


@dataclass(frozen=True)
class LinkSettings:
    """Where the device is and how we talk to it."""

    uri: str                       # Request-URI, e.g. "sip:radio@192.0.2.7:5060"
    host: str                      # where datagrams go (the URI's host, or a registered source)
    port: int
    local_host: str = "127.0.0.1"  # the address we bind and advertise in SDP and Contact
    codec: str = "PCMU"
    invite_timeout_s: float = 8.0
    request_timeout_s: float = 4.0
    keepalive_s: float = 10.0
    user: str = "dispatchd"


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_data: Callable[[bytes, tuple[str, int]], None],
                 on_error: Callable[[Exception], None]) -> None:
        self.on_data, self.on_error = on_data, on_error

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.on_data(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.on_error(exc)


class SipRadioLink:
    """One call to a RoIP device (see the module docstring)."""

    def __init__(self, settings: LinkSettings, *, on_audio: Callable[[bytes], None],
                 on_digit: Callable[[str], None], on_info: Callable[[str, bytes], bool],
                 on_lost: Callable[[str], None]) -> None:
        """Describe the call; nothing is sent until :meth:`open`."""
        if settings.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}")
        self.settings = settings
        self.on_audio, self.on_digit = on_audio, on_digit
        self.on_info, self.on_lost = on_info, on_lost
        self.codec: Codec = CODECS[settings.codec]
        self.dest = (settings.host, settings.port)
        self.dialog: Dialog | None = None
        self.negotiated: Negotiated | None = None
        self._sip: asyncio.DatagramTransport | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._sip_port = self._rtp_port = 0
        self._pending: dict[tuple[int, str], asyncio.Future[SipResponse]] = {}
        self._invite: SipRequest | None = None
        self._ack: bytes | None = None
        self._offer: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lost = False
        self._closed = False
        self._invite_answered = False
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._dtmf_rx: DtmfReceiver | None = None
        self._pcm = np.zeros(0, dtype=np.int16)
        self.counters = dict.fromkeys(("sip_bad", "rtp_bad", "rtp_foreign", "rtp_in",
                                       "rtp_out", "dtmf_out", "info_out"), 0)

    # --- set-up and tear-down ----------

    async def open(self) -> None:
        """Bind, INVITE the device and wait for the call; :class:`RoipLinkError` if it fails."""
        loop = asyncio.get_running_loop()
        host = self.settings.local_host
        try:
            sip, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self._sip_in, self._net_error), local_addr=(host, 0))
            rtp, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self._rtp_in, self._net_error), local_addr=(host, 0))
        except OSError as exc:
            self.close(bye=False)
            raise RoipLinkError(f"cannot bind on {host}: {exc}") from exc
        self._sip, self._rtp = sip, rtp
        self._sip_port = sip.get_extra_info("sockname")[1]
        self._rtp_port = rtp.get_extra_info("sockname")[1]
        invite = self._new_invite()
        self._invite = invite
        try:
            response = await self._request(invite, self.settings.invite_timeout_s, invite=True)
        except TimeoutError as exc:
            if self._invite_answered:
                self._send(build_cancel(invite).to_bytes())
            raise RoipLinkError(f"{self.settings.uri} did not answer the INVITE") from exc
        if not 200 <= response.status < 300:
            raise RoipLinkError(f"{self.settings.uri} refused the call: "
                                f"{response.status} {response.reason}")
        self.dialog = Dialog.as_uac(invite, response)
        self._send_ack()
        try:
            self.negotiated = accept_answer(self._offer, parse_sdp(
                response.body.decode("utf-8", "replace")))
        except SdpError as exc:
            self.close(bye=True)
            raise RoipLinkError(f"{self.settings.uri}: unusable SDP answer: {exc}") from exc
        if self.negotiated.remote is None:
            self.close(bye=True)
            raise RoipLinkError(f"{self.settings.uri} answered with no RTP address")
        if self.negotiated.dtmf_payload_type is not None:
            self._dtmf_rx = DtmfReceiver(self.negotiated.dtmf_payload_type)
        self._spawn(self._keepalive())

    def _new_invite(self) -> SipRequest:
        s = self.settings
        uri = parse_uri(s.uri)
        headers = Headers()
        headers.add("Via", self._via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:{s.user}@{s.local_host}:{self._sip_port}>"
                            f";tag={secrets.token_hex(6)}")
        headers.add("To", f"<{s.uri}>")
        headers.add("Call-ID", f"{secrets.token_hex(12)}@{s.local_host}")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self._contact())
        headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO")
        headers.add("Content-Type", "application/sdp")
        self._offer = make_offer(LocalMedia(s.local_host, self._rtp_port,
                                            secrets.randbits(31)), (self.codec,))
        return SipRequest(headers, build_sdp(self._offer).encode(), "INVITE", uri)

    def _via(self) -> str:
        return make_via("UDP", self.settings.local_host, self._sip_port, new_branch())

    def _contact(self) -> str:
        return f"<sip:{self.settings.user}@{self.settings.local_host}:{self._sip_port}>"

    def _send_ack(self) -> None:
        assert self.dialog is not None
        self._ack = self.dialog.create_ack(self._via()).to_bytes()
        self._send(self._ack)

    def close(self, *, bye: bool = True) -> None:
        """Hang up (a BYE if the call is up and ``bye``) and close both sockets; idempotent."""
        if self._closed:
            return
        self._closed = True
        if bye and self.dialog is not None and self.dialog.state is DialogState.CONFIRMED:
            with contextlib.suppress(SipError, ValueError):
                self._send(self.dialog.create_request("BYE", self._via()).to_bytes())
        for task in self._tasks:
            task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        for transport in (self._sip, self._rtp):
            if transport is not None:
                transport.close()

    @property
    def up(self) -> bool:
        """True while the call is established and not lost."""
        return self.dialog is not None and not self._lost and not self._closed

    # --- requests we send ----------

    def _send(self, data: bytes) -> None:
        if self._sip is not None and not self._sip.is_closing():
            self._sip.sendto(data, self.dest)

    async def _request(self, request: SipRequest, timeout: float, *, invite: bool = False,
                       sent: bool = False) -> SipResponse:
        """Send (unless ``sent``) and retransmit until a final response; ``TimeoutError``."""
        key = (request.cseq.number, request.method)
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        data = request.to_bytes()
        interval = T1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if not sent:
                        self._send(data)
                    sent = False
                    done, _ = await asyncio.wait({future}, timeout=interval)
                    if done:
                        return future.result()
                    if invite and self._invite_answered:
                        interval = timeout  # a provisional came: stop retransmitting (17.1.1.2)
                    else:
                        interval = min(interval * 2, T2 if not invite else timeout)
        finally:
            self._pending.pop(key, None)

    def _dialog_request(self, method: str, content_type: str | None, body: bytes) -> SipRequest:
        if not self.up or self.dialog is None:
            raise RoipLinkError("no call to the device")
        extra = (("Content-Type", content_type),) if content_type else ()
        return self.dialog.create_request(method, self._via(), extra_headers=extra, body=body)

    async def in_dialog(self, method: str, *, content_type: str | None = None,
                        body: bytes = b"", request: SipRequest | None = None) -> SipResponse:
        """Send ``method`` in the dialog and return its final response (``RoipLinkError``).

        ``request``: one already built and sent once (it is only retransmitted)."""
        sent = request is not None
        if request is None:
            request = self._dialog_request(method, content_type, body)
        assert self.dialog is not None
        try:
            response = await self._request(request, self.settings.request_timeout_s, sent=sent)
        except TimeoutError as exc:
            raise RoipLinkError(f"{method} to the device was not answered") from exc
        self.dialog.on_response(response)
        return response

    def send_info(self, content_type: str, body: bytes,
                  on_failure: Callable[[str], None]) -> None:
        """INFO in the dialog now; ``on_failure(why)`` if it is refused or not answered."""
        request = self._dialog_request("INFO", content_type, body)
        self._send(request.to_bytes())  # now: a stop closes the socket right after an unkey
        self.counters["info_out"] += 1
        self._spawn(self._info(request, on_failure), "roip-info")

    async def drain(self) -> None:
        """Wait until the requests in flight (an unkey INFO) are answered or given up."""
        infos = {task for task in self._tasks if task.get_name() == "roip-info"}
        if infos:
            await asyncio.wait(infos, timeout=self.settings.request_timeout_s)

    async def _info(self, request: SipRequest, on_failure: Callable[[str], None]) -> None:
        try:
            response = await self.in_dialog("INFO", request=request)
        except RoipLinkError as exc:
            on_failure(str(exc))
            return
        if not 200 <= response.status < 300:
            on_failure(f"INFO refused: {response.status} {response.reason}")

    async def _keepalive(self) -> None:
        while self.up:
            await asyncio.sleep(self.settings.keepalive_s)
            try:
                response = await self.in_dialog("OPTIONS")
            except RoipLinkError as exc:
                self._gone(f"keep-alive failed: {exc}")
                return
            if response.status in (408, 481):
                self._gone(f"keep-alive: the device lost the call ({response.status})")
                return

    def _spawn(self, coro: Any, name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _gone(self, why: str) -> None:
        if self._lost or self._closed:
            return
        self._lost = True
        if self.dialog is not None:
            self.on_lost(why)

    def _net_error(self, exc: Exception) -> None:
        log.warning("RoIP link network error", extra={"device": self.settings.uri,
                                                       "error": str(exc)})
        self._gone(f"network error: {exc}")

    # --- SIP from the device ----------

    def _sip_in(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except SipError as exc:
            self.counters["sip_bad"] += 1
            log.info("bad SIP from a RoIP device dropped",
                     extra={"source": f"{source[0]}:{source[1]}", "error": str(exc)})
            return
        try:
            if isinstance(message, SipResponse):
                self._response_in(message)
            else:
                assert isinstance(message, SipRequest)
                self._request_in(message, source)
        except SipError as exc:
            self.counters["sip_bad"] += 1
            log.info("unusable SIP from a RoIP device dropped", extra={"error": str(exc)})

    def _response_in(self, response: SipResponse) -> None:
        cseq = response.cseq
        if self._invite is None or response.call_id != self._invite.call_id:
            return
        if cseq.method == "INVITE" and response.status < 200:
            self._invite_answered = True
            return
        if cseq.method == "INVITE" and 200 <= response.status < 300 and self._ack is not None:
            self._send(self._ack)  # a retransmitted 2xx: our ACK was lost
            return
        if cseq.method == "INVITE" and response.status >= 300:
            # A failure is ACKed hop by hop (17.1.1.3), or the device keeps resending it.
            self._send(build_ack_for_failure(self._invite, response).to_bytes())
        future = self._pending.get((cseq.number, cseq.method))
        if future is not None and not future.done() and response.status >= 200:
            future.set_result(response)

    def _request_in(self, request: SipRequest, source: tuple[str, int]) -> None:
        def answer(status: int, **kw: Any) -> None:
            self._sip_answer(build_response(request, status, **kw), source)

        if request.method == "ACK":
            return
        dialog = self.dialog
        if dialog is None or request.call_id != dialog.id.call_id or self._lost:
            answer(481)
            return
        try:
            dialog.on_request(request)
        except SipError as exc:
            answer(exc.status if hasattr(exc, "status") else 500)
            return
        if request.method == "BYE":
            answer(200)
            self._gone("the device hung up (BYE)")
        elif request.method == "INFO":
            kind = request.headers.get("Content-Type") or ""
            handled = self.on_info(kind, request.body)
            answer(200 if handled else 415)
        elif request.method == "OPTIONS":
            answer(200, extra_headers=(("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"),))
        elif request.method == "INVITE":
            self._reinvite(request, answer)
        else:
            answer(501)

    def _reinvite(self, request: SipRequest, answer: Callable[..., None]) -> None:
        """A session refresh or a new address from the device: answer it, keep our codec."""
        try:
            sd, agreed = answer_offer(parse_sdp(request.body.decode("utf-8", "replace")),
                                      LocalMedia(self.settings.local_host, self._rtp_port,
                                                 secrets.randbits(31)), (self.codec,))
        except SdpError:
            answer(488)
            return
        self.negotiated = agreed
        answer(200, body=build_sdp(sd).encode(),
               extra_headers=(("Contact", self._contact()), ("Content-Type", "application/sdp")))

    def _sip_answer(self, response: SipResponse, source: tuple[str, int]) -> None:
        if self._sip is not None and not self._sip.is_closing():
            self._sip.sendto(response.to_bytes(), source)

    # --- RTP ----------

    def _rtp_in(self, data: bytes, source: tuple[str, int]) -> None:
        agreed = self.negotiated
        if agreed is None or agreed.remote is None or is_rtcp(data):
            return
        if source[0] != agreed.remote[0]:
            self.counters["rtp_foreign"] += 1
            return
        try:
            packet = parse_rtp(data)
        except MediaError:
            self.counters["rtp_bad"] += 1
            return
        self.counters["rtp_in"] += 1
        if self._dtmf_rx is not None and packet.payload_type == self._dtmf_rx.payload_type:
            digit = self._dtmf_rx.receive(packet)
            if digit is not None:
                self.on_digit(digit.digit)
            return
        if packet.payload_type != agreed.payload_type:
            return
        decode = g711.ulaw_decode if agreed.codec.name == "PCMU" else g711.alaw_decode
        self._pcm = np.concatenate((self._pcm, decode(packet.payload)))[-8000:]
        while len(self._pcm) >= FRAME_SAMPLES:
            frame, self._pcm = self._pcm[:FRAME_SAMPLES], self._pcm[FRAME_SAMPLES:]
            self.on_audio(frame.astype("<i2").tobytes())

    def _rtp_send(self, payload_type: int, payload: bytes, *, marker: bool = False,
                  advance: int = FRAME_SAMPLES) -> None:
        agreed = self.negotiated
        if agreed is None or agreed.remote is None or self._rtp is None or \
                self._rtp.is_closing():
            raise RoipLinkError("no RTP path to the device")
        self._seq = (self._seq + 1) & 0xFFFF
        self._rtp.sendto(build_rtp(RtpPacket(payload_type, self._seq, self._ts, self._ssrc,
                                             payload, marker)), agreed.remote)
        self._ts = (self._ts + advance) & 0xFFFFFFFF
        self.counters["rtp_out"] += 1

    def send_audio(self, frame: bytes) -> None:
        """One 20 ms frame (s16le, 160 samples) to the device, G.711-encoded."""
        if not self.up:
            raise RoipLinkError("no call to the device")
        pcm = np.frombuffer(frame, dtype="<i2").astype(np.int16)
        encode = g711.ulaw_encode if self.codec.name == "PCMU" else g711.alaw_encode
        assert self.negotiated is not None
        self._rtp_send(self.negotiated.payload_type, encode(pcm))

    def send_dtmf(self, digits: str) -> None:
        """RFC 4733 events for ``digits`` (three updates, three ends each; 100 ms per digit)."""
        if not self.up or self.negotiated is None:
            raise RoipLinkError("no call to the device")
        pt = self.negotiated.dtmf_payload_type
        if pt is None:
            raise RoipLinkError("the device did not accept telephone-event (RFC 4733)")
        for digit in digits:
            code = DIGITS.index(digit)
            for i, duration in enumerate((160, 320, 480, 800, 800, 800)):
                payload = build_telephone_event(TelephoneEvent(code, i >= 3, 10, duration))
                self._rtp_send(pt, payload, marker=i == 0, advance=0)
            self._ts = (self._ts + 960) & 0xFFFFFFFF  # the next event or frame starts later
            self.counters["dtmf_out"] += 1


class LinkOptions(Protocol):
    """The settings :func:`open_link` reads (a :class:`radio.roip.RoipSettings` has them)."""

    @property
    def local_host(self) -> str: ...
    @property
    def codec(self) -> str: ...
    @property
    def invite_timeout_s(self) -> float: ...
    @property
    def request_timeout_s(self) -> float: ...
    @property
    def keepalive_s(self) -> float: ...


def open_link(options: LinkOptions, uri: str, where: tuple[str, int] | None, *,
              on_audio: Callable[[bytes], None], on_digit: Callable[[str], None],
              on_info: Callable[[str, bytes], bool],
              on_lost: Callable[[str], None]) -> SipRadioLink:
    """The link that calls ``uri`` at ``where`` (the URI's own host and port when None)."""
    if where is None:
        try:
            where = target_of(uri)
        except ValueError as exc:
            raise RoipLinkError(str(exc)) from exc
    return SipRadioLink(
        LinkSettings(uri, where[0], where[1], options.local_host, options.codec,
                     options.invite_timeout_s, options.request_timeout_s, options.keepalive_s),
        on_audio=on_audio, on_digit=on_digit, on_info=on_info, on_lost=on_lost)


def target_of(uri: str) -> tuple[str, int]:
    """Host and port to send to for a ``sip:`` URI (5060 when it names no port)."""
    parsed = parse_uri(uri)
    if not isinstance(parsed, SipUri) or parsed.scheme != "sip":
        raise ValueError(f"not a sip: URI: {uri!r}")
    return parsed.host, parsed.port or 5060
