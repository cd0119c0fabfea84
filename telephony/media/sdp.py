"""SDP (RFC 4566) parsing and building, and RFC 3264 offer/answer for G.711.

Theory of operation
-------------------
:func:`parse_sdp` turns a body into a frozen :class:`SessionDescription` or
raises :class:`SdpError` (a ``ValueError``; the B2BUA answers 488).  The body
is bounded in bytes, lines and line length, control characters are refused,
and ``v=``, ``o=``, ``s=`` are required in order; unknown lines and attributes
are kept so :func:`build_sdp` reproduces what matters.

Negotiation is deliberately narrow: one audio stream per leg, G.711 µ-law or
A-law at 8 kHz, 20 ms frames, telephone-event/8000 for DTMF.  The answerer
(:func:`answer_offer`) takes the offerer's first acceptable codec (RFC 3264
6.1: the offerer's order is its preference), answers telephone-event with the
offerer's payload type, mirrors the direction (sendonly -> recvonly, ...),
and rejects every other m-line with port 0.  ``c=0.0.0.0`` (RFC 2543 hold)
means "do not send".  The offerer side is :func:`make_offer` and
:func:`accept_answer`.  The result of either side is a :class:`Negotiated`:
what the engine sends, where, and whether it sends and receives at all.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, replace

__all__ = [
    "PCMA",
    "PCMU",
    "Codec",
    "Connection",
    "Direction",
    "LocalMedia",
    "Media",
    "Negotiated",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "accept_answer",
    "answer_offer",
    "build_sdp",
    "make_offer",
    "parse_sdp",
]

MAX_SDP_BYTES = 16 * 1024
MAX_LINES = 256
MAX_LINE = 1024
MAX_MEDIA = 16
MAX_FORMATS = 64
RTP_PROTOS = ("RTP/AVP", "RTP/AVPF")
PTIME_MS = 20


class SdpError(ValueError):
    """A body we cannot parse or an offer/answer we cannot accept (SIP 488)."""

    status = 488


class Direction(enum.Enum):
    """RFC 3264 media direction, always from the point of view of the SDP's author."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """The author sends media."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        """The author receives media."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def mirrored(self) -> Direction:
        """The direction the other side answers with (RFC 3264 6.1)."""
        return _MIRROR[self]


_MIRROR = {Direction.SENDRECV: Direction.SENDRECV, Direction.SENDONLY: Direction.RECVONLY,
           Direction.RECVONLY: Direction.SENDONLY, Direction.INACTIVE: Direction.INACTIVE}
_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=IN IP4|IP6 address``."""

    addrtype: str
    address: str

    @property
    def is_hold(self) -> bool:
        """RFC 2543 hold: the unspecified address."""
        return ipaddress.ip_address(self.address).is_unspecified


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=username sess-id sess-version IN addrtype address``."""

    username: str
    session_id: int
    version: int
    addrtype: str
    address: str


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:PT encoding/rate[/channels]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Media:
    """One m= section."""

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: Connection | None = None
    direction: Direction | None = None
    ptime: int | None = None
    rtpmaps: tuple[RtpMap, ...] = ()
    fmtps: tuple[tuple[int, str], ...] = ()
    attributes: tuple[str, ...] = ()  # other a= lines, verbatim after "a="

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The rtpmap of ``payload_type``, explicit or static (RFC 3551)."""
        for m in self.rtpmaps:
            if m.payload_type == payload_type:
                return m
        static = _STATIC.get(payload_type)
        return RtpMap(payload_type, *static) if static else None


_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body."""

    origin: Origin
    name: str = "-"
    connection: Connection | None = None
    direction: Direction | None = None
    media: tuple[Media, ...] = ()
    timing: str = "0 0"
    attributes: tuple[str, ...] = ()


def _address(addrtype: str, address: str, what: str) -> Connection:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise SdpError(
            f"{what}: {address!r} is not an IP address (hostnames unsupported)") from None
    if (addrtype, ip.version) not in (("IP4", 4), ("IP6", 6)):
        raise SdpError(f"{what}: address type {addrtype} does not match {address!r}")
    return Connection(addrtype, address)


def _connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise SdpError(f"c= must be 'IN IP4|IP6 address', got {value!r}")
    address = parts[2].split("/")[0]  # multicast TTL suffix
    return _address(parts[1], address, "c=")


def _origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6 or parts[3] != "IN":
        raise SdpError(f"o= needs 6 fields, got {value!r}")
    try:
        sid, ver = int(parts[1]), int(parts[2])
    except ValueError:
        raise SdpError(f"o= session id and version must be numbers: {value!r}") from None
    if not (0 <= sid < 1 << 64 and 0 <= ver < 1 << 64):
        raise SdpError("o= session id or version out of range")
    return Origin(parts[0], sid, ver, parts[4], parts[5])


def _media_line(value: str) -> Media:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"m= needs media, port, proto and formats: {value!r}")
    try:
        port = int(parts[1].split("/")[0])
    except ValueError:
        raise SdpError(f"m= port is not a number: {parts[1]!r}") from None
    if not 0 <= port <= 65535:
        raise SdpError(f"m= port {port} out of range")
    if len(parts) - 3 > MAX_FORMATS:
        raise SdpError(f"m= lists more than {MAX_FORMATS} formats")
    return Media(parts[0], port, parts[2], tuple(parts[3:]))


def _payload_type(text: str, what: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 127:
        raise SdpError(f"{what}: payload type {text!r} is not 0..127")
    return int(text)


def _media_attribute(media: Media, attr: str) -> Media:
    name, _, value = attr.partition(":")
    if name in _DIRECTIONS and not value:
        return replace(media, direction=_DIRECTIONS[name])
    if name == "rtpmap":
        pt_text, _, spec = value.partition(" ")
        pt = _payload_type(pt_text, "a=rtpmap")
        fields = spec.strip().split("/")
        if len(fields) not in (2, 3) or not fields[1].isdigit():
            raise SdpError(f"a=rtpmap needs encoding/rate: {attr!r}")
        channels = int(fields[2]) if len(fields) == 3 and fields[2].isdigit() else 1
        return replace(media, rtpmaps=(*media.rtpmaps, RtpMap(pt, fields[0], int(fields[1]),
                                                                channels)))
    if name == "fmtp":
        pt_text, _, params = value.partition(" ")
        return replace(media, fmtps=(*media.fmtps, (_payload_type(pt_text, "a=fmtp"), params)))
    if name == "ptime":
        if not value.isdigit() or not 1 <= int(value) <= 1000:
            raise SdpError(f"a=ptime must be 1..1000 ms: {value!r}")
        return replace(media, ptime=int(value))
    return replace(media, attributes=(*media.attributes, attr))


def _lines(body: str) -> list[tuple[str, str]]:
    if len(body.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise SdpError(f"SDP body larger than {MAX_SDP_BYTES} bytes")
    raw = body.replace("\r\n", "\n").split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    if len(raw) > MAX_LINES:
        raise SdpError(f"SDP body has more than {MAX_LINES} lines")
    out = []
    for number, line in enumerate(raw, 1):
        if len(line) > MAX_LINE:
            raise SdpError(f"SDP line {number} longer than {MAX_LINE} characters")
        if any(ord(ch) < 32 and ch != "\t" or ord(ch) == 127 for ch in line):
            raise SdpError(f"SDP line {number} contains a control character")
        if len(line) < 2 or line[1] != "=" or not "a" <= line[0] <= "z":
            raise SdpError(f"SDP line {number} is not 'x=value': {line[:40]!r}")
        out.append((line[0], line[2:]))
    return out


def parse_sdp(body: str) -> SessionDescription:
    """Parse an SDP body; raise :class:`SdpError` naming what is wrong."""
    lines = _lines(body)
    if not lines:
        raise SdpError("empty SDP body")
    kinds = [k for k, _ in lines[:3]]
    if kinds != ["v", "o", "s"] or lines[0][1] != "0":
        raise SdpError("SDP must start with v=0, o=, s=")
    session = SessionDescription(origin=_origin(lines[1][1]), name=lines[2][1])
    media: list[Media] = []
    for kind, value in lines[3:]:
        if kind == "m":
            if len(media) >= MAX_MEDIA:
                raise SdpError(f"more than {MAX_MEDIA} m= lines")
            media.append(_media_line(value))
        elif kind == "c":
            conn = _connection(value)
            if media:
                media[-1] = replace(media[-1], connection=conn)
            else:
                session = replace(session, connection=conn)
        elif kind == "a":
            if media:
                media[-1] = _media_attribute(media[-1], value)
            elif value in _DIRECTIONS:
                session = replace(session, direction=_DIRECTIONS[value])
            else:
                session = replace(session, attributes=(*session.attributes, value))
        elif kind == "t" and not media:
            session = replace(session, timing=value)
    return replace(session, media=tuple(media))


def build_sdp(sd: SessionDescription) -> str:
    """Render ``sd`` as an SDP body with CRLF line ends."""
    o = sd.origin
    lines = ["v=0", f"o={o.username} {o.session_id} {o.version} IN {o.addrtype} {o.address}",
             f"s={sd.name}"]
    if sd.connection is not None:
        lines.append(f"c=IN {sd.connection.addrtype} {sd.connection.address}")
    lines.append(f"t={sd.timing}")
    lines += [f"a={a}" for a in sd.attributes]
    if sd.direction is not None:
        lines.append(f"a={sd.direction.value}")
    for m in sd.media:
        lines.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}")
        if m.connection is not None:
            lines.append(f"c=IN {m.connection.addrtype} {m.connection.address}")
        for r in m.rtpmaps:
            chans = f"/{r.channels}" if r.channels != 1 else ""
            lines.append(f"a=rtpmap:{r.payload_type} {r.encoding}/{r.clock_rate}{chans}")
        lines += [f"a=fmtp:{pt} {params}" for pt, params in m.fmtps]
        if m.ptime is not None:
            lines.append(f"a=ptime:{m.ptime}")
        lines += [f"a={a}" for a in m.attributes]
        if m.direction is not None:
            lines.append(f"a={m.direction.value}")
    for line in lines:
        if any(ord(ch) < 32 for ch in line):
            raise SdpError("refusing to build SDP with a control character")
    return "\r\n".join(lines) + "\r\n"


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio codec we can send and receive."""

    name: str
    payload_type: int  # static number, used in our offers
    clock_rate: int = 8000


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
DEFAULT_CODECS = (PCMU, PCMA)
DTMF_PAYLOAD_TYPE = 101


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """Our side of a leg: the address and RTP port to advertise, and the o= line."""

    address: str
    port: int
    session_id: int
    version: int = 1
    username: str = "dispatchd"
    direction: Direction = Direction.SENDRECV

    @property
    def connection(self) -> Connection:
        """Our c= line."""
        ip = ipaddress.ip_address(self.address)
        return Connection("IP4" if ip.version == 4 else "IP6", self.address)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What was agreed for one leg, from our point of view."""

    codec: Codec
    payload_type: int  # as the peer numbered it (static for G.711)
    dtmf_payload_type: int | None
    remote: tuple[str, int] | None  # None: the peer must not be sent to (hold, port 0)
    direction: Direction  # ours: do we send, do we receive
    ptime: int = PTIME_MS
    remote_session: tuple[int, int] = field(default=(0, 0))  # peer's o= id, version


def _choose(media: Media, codecs: tuple[Codec, ...]) -> tuple[Codec, int, int | None] | None:
    chosen: tuple[Codec, int] | None = None
    dtmf: int | None = None
    for fmt in media.formats:
        if not fmt.isdigit() or int(fmt) > 127:
            continue
        mapping = media.rtpmap(int(fmt))
        if mapping is None or mapping.clock_rate != 8000 or mapping.channels != 1:
            continue
        name = mapping.encoding.upper()
        if name == "TELEPHONE-EVENT" and dtmf is None:
            dtmf = mapping.payload_type
        for codec in codecs:
            if chosen is None and codec.name == name:
                chosen = (codec, mapping.payload_type)
    return (*chosen, dtmf) if chosen else None


def _remote(sd: SessionDescription, media: Media) -> tuple[str, int] | None:
    conn = media.connection or sd.connection
    if conn is None:
        raise SdpError("no c= line for the audio stream")
    if conn.is_hold or media.port == 0:
        return None
    return conn.address, media.port


def _rejected(media: Media) -> Media:
    return Media(media.kind, 0, media.proto, media.formats[:1] or ("0",))


def answer_offer(
    offer: SessionDescription, local: LocalMedia, codecs: tuple[Codec, ...] = DEFAULT_CODECS
) -> tuple[SessionDescription, Negotiated]:
    """Answer an offer: the first acceptable audio stream is taken, the rest refused.

    Raises :class:`SdpError` when no audio stream can be accepted.
    """
    answered: list[Media] = []
    agreed: Negotiated | None = None
    for media in offer.media:
        pick = None
        if agreed is None and media.kind == "audio" and media.proto in RTP_PROTOS and media.port:
            pick = _choose(media, codecs)
        if pick is None:
            answered.append(_rejected(media))
            continue
        codec, pt, dtmf = pick
        theirs = media.direction or offer.direction or Direction.SENDRECV
        remote = _remote(offer, media)
        ours = _MIRROR[theirs]
        if ours is not local.direction and local.direction is not Direction.SENDRECV:
            ours = _intersect(ours, local.direction)
        if remote is None and ours.sends:  # RFC 2543 hold: nowhere to send
            ours = Direction.RECVONLY if ours.receives else Direction.INACTIVE
        agreed = Negotiated(codec, pt, dtmf, remote, ours,
                            remote_session=(offer.origin.session_id, offer.origin.version))
        answered.append(_our_media(local, codec, pt, dtmf, ours, media.proto))
    if agreed is None:
        kinds = ", ".join(f"{m.kind} {m.proto} {' '.join(m.formats)}" for m in offer.media)
        raise SdpError(f"no acceptable audio stream (PCMU/PCMA 8 kHz) in offer: {kinds or 'none'}")
    sd = SessionDescription(
        origin=Origin(local.username, local.session_id, local.version,
                      local.connection.addrtype, local.address),
        connection=local.connection, media=tuple(answered))
    return sd, agreed


def _intersect(a: Direction, b: Direction) -> Direction:
    sends, receives = a.sends and b.sends, a.receives and b.receives
    if sends and receives:
        return Direction.SENDRECV
    return Direction.SENDONLY if sends else Direction.RECVONLY if receives else Direction.INACTIVE


def _our_media(local: LocalMedia, codec: Codec, pt: int, dtmf: int | None,
               direction: Direction, proto: str = "RTP/AVP") -> Media:
    formats = [str(pt)]
    rtpmaps = [RtpMap(pt, codec.name, codec.clock_rate)]
    fmtps: list[tuple[int, str]] = []
    if dtmf is not None:
        formats.append(str(dtmf))
        rtpmaps.append(RtpMap(dtmf, "telephone-event", 8000))
        fmtps.append((dtmf, "0-16"))
    return Media("audio", local.port, proto, tuple(formats), rtpmaps=tuple(rtpmaps),
                 fmtps=tuple(fmtps), ptime=PTIME_MS, direction=direction)


def make_offer(local: LocalMedia, codecs: tuple[Codec, ...] = DEFAULT_CODECS,
               dtmf_payload_type: int = DTMF_PAYLOAD_TYPE) -> SessionDescription:
    """Our offer for a new outbound leg: every codec in our order, plus telephone-event."""
    formats = [str(c.payload_type) for c in codecs] + [str(dtmf_payload_type)]
    rtpmaps = [RtpMap(c.payload_type, c.name, c.clock_rate) for c in codecs]
    rtpmaps.append(RtpMap(dtmf_payload_type, "telephone-event", 8000))
    media = Media("audio", local.port, "RTP/AVP", tuple(formats), rtpmaps=tuple(rtpmaps),
                  fmtps=((dtmf_payload_type, "0-16"),), ptime=PTIME_MS,
                  direction=local.direction)
    return SessionDescription(
        origin=Origin(local.username, local.session_id, local.version,
                      local.connection.addrtype, local.address),
        connection=local.connection, media=(media,))


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> Negotiated:
    """Check the peer's answer against our offer and say what was agreed."""
    if len(answer.media) != len(offer.media):
        raise SdpError(f"answer has {len(answer.media)} m= lines, offer had {len(offer.media)}")
    ours = offer.media[0]
    theirs = answer.media[0]
    if theirs.kind != "audio" or theirs.port == 0:
        raise SdpError("the peer refused the audio stream")
    offered = tuple(c for c in DEFAULT_CODECS if str(c.payload_type) in ours.formats)
    pick = _choose(theirs, offered)
    if pick is None:
        raise SdpError(f"answer picks no codec we offered: {' '.join(theirs.formats)}")
    codec, pt, dtmf = pick
    if dtmf is not None and str(dtmf) not in ours.formats:
        dtmf = None
    their_dir = theirs.direction or answer.direction or Direction.SENDRECV
    our_dir = _intersect(ours.direction or Direction.SENDRECV, _MIRROR[their_dir])
    remote = _remote(answer, theirs)
    if remote is None and our_dir.sends:
        our_dir = Direction.RECVONLY if our_dir.receives else Direction.INACTIVE
    return Negotiated(codec, pt, dtmf, remote, our_dir,
                      remote_session=(answer.origin.session_id, answer.origin.version))
