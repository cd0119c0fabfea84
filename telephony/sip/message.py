"""SIP requests and responses: parsing, validation, serialisation, framing.

Theory of operation
-------------------
:func:`parse_message` takes one complete message (a UDP datagram, or a frame
cut by :class:`StreamFramer` from a TCP/TLS stream) and returns a
:class:`SipRequest` or :class:`SipResponse`, or raises a
:class:`~telephony.sip.errors.SipError` carrying the status to answer.

Parsing happens in two passes.  The first splits the start line, header
lines (unfolding LWS continuations, expanding compact names) and body, with
hard limits on every size.  The second validates the header fields every
element depends on: first the five needed to answer at all (Via, From, To,
Call-ID, CSeq), then the rest (Max-Forwards, Content-Length, Contact, Route,
Record-Route, Content-Type, version, Request-URI scheme).  An error in the
second group is raised with :attr:`SipError.request` set, so the caller can
answer it with :func:`build_response`.

Header text is decoded as UTF-8 with ``surrogateescape``: non-UTF-8 octets
survive a parse/serialise round trip unchanged instead of failing the parse.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from telephony.sip.errors import (
    SipBadExtension,
    SipBodyTooLarge,
    SipError,
    SipFramingError,
    SipHeaderInjection,
    SipMessageTooLarge,
    SipParseError,
    SipUnsupportedUriScheme,
    SipUriTooLong,
    SipVersionNotSupported,
)
from telephony.sip.headers import (
    ContentType,
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    check_header_text,
    parse_content_type,
    parse_cseq,
    parse_name_addr,
    parse_name_addrs,
    parse_via,
    prime_via,
)
from telephony.sip.uri import AbsoluteUri, SipUri, Uri, format_host, parse_uri

__all__ = [
    "DEFAULT_LIMITS",
    "KEEPALIVE_PING",
    "REASON_PHRASES",
    "Destination",
    "SipLimits",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "build_ack_for_failure",
    "build_cancel",
    "build_response",
    "check_require",
    "make_via",
    "new_branch",
    "parse_message",
    "response_destination",
    "stamp_via_received",
]

_T = TypeVar("_T")

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})
KEEPALIVE_PING = b"\r\n\r\n"
"""A RFC 5626 double-CRLF keep-alive, returned by :meth:`StreamFramer.feed`."""

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 421: "Extension Required", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION_RE = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.IGNORECASE)
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
# Call-ID is word ["@" word]; word adds ( ) < > : \ " / [ ] ? { } to token.
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID_RE = re.compile(f"{_WORD}(?:@{_WORD})?")
_DIGITS_RE = re.compile(r"[0-9]{1,10}")
_START_LINE_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PLACEHOLDER_URI = AbsoluteUri("invalid", "request-uri-rejected")
_SINGLE_VALUED = frozenset(
    {"From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type"})
_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
# Header names as written on the wire (before the colon) that were valid tokens,
# with their canonical spelling: the same dozen spellings arrive in every
# message.  Bounded, since names come from the network.
_FIELD_NAMES: dict[str, str] = {}
_FIELD_NAMES_MAX = 1024


@dataclass(frozen=True, slots=True)
class SipLimits:
    """Hard limits applied while reading; each has a named error when exceeded."""

    max_message: int = 65536
    """Whole message (start line + headers + body) -> 513 Message Too Large."""
    max_headers: int = 128
    """Header fields after unfolding -> 400."""
    max_line: int = 8192
    """One physical header line -> 400."""
    max_body: int = 65536
    """Body octets -> 413 Request Entity Too Large."""
    max_uri: int = 4096
    """Request-URI characters -> 414 Request-URI Too Long."""


DEFAULT_LIMITS = SipLimits()


@dataclass(frozen=True, slots=True)
class Destination:
    """Where to send a message: transport name (UDP/TCP/TLS...), host, port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """True for stream/reliable transports (timers A/E/G are not used)."""
        return self.transport.upper() in RELIABLE_TRANSPORTS


@dataclass(eq=True)
class SipMessage:
    """Fields shared by requests and responses; structured views are parsed on demand."""

    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    # Structured values parsed from header text, keyed by (kind, raw text) so
    # that editing a header simply misses the memo; never compared or shown.
    _memo: dict[tuple[str, str], object] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def _parsed(self, kind: str, text: str, parser: Callable[[str], _T]) -> _T:
        key = (kind, text)
        if key in self._memo:
            return cast(_T, self._memo[key])
        value = parser(text)
        self._memo[key] = value
        return value

    def start_line(self) -> str:
        """The request-line or status-line (without CRLF)."""
        raise NotImplementedError

    @property
    def vias(self) -> list[Via]:
        """Every Via element, top first."""
        return [self._parsed("via", v, parse_via) for v in self.headers.values("Via")]

    @property
    def top_via(self) -> Via:
        """The topmost Via element; raises 400 if there is none."""
        value = self.headers.first_value("Via")
        if value is None:
            raise SipParseError("missing Via")
        return self._parsed("via", value, parse_via)

    @property
    def from_(self) -> NameAddr:
        """The From header."""
        return self._parsed("addr", self._required("From"), parse_name_addr)

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return self._parsed("addr", self._required("To"), parse_name_addr)

    @property
    def call_id(self) -> str:
        """The Call-ID header."""
        value = self._required("Call-ID")
        if _CALL_ID_RE.fullmatch(value) is None:
            raise SipParseError(f"bad Call-ID {value!r}")
        return value

    @property
    def cseq(self) -> CSeq:
        """The CSeq header."""
        return self._parsed("cseq", self._required("CSeq"), parse_cseq)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255), or None when absent (RFC 2543 peers)."""
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        if _DIGITS_RE.fullmatch(value) is None or int(value) > 255:
            raise SipParseError(f"bad Max-Forwards {value!r}")
        return int(value)

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values (``star`` set for ``Contact: *``)."""
        return parse_name_addrs(self.headers.values("Contact"))

    @property
    def routes(self) -> list[NameAddr]:
        """Route values in order."""
        return parse_name_addrs(self.headers.values("Route"))

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values in order."""
        return parse_name_addrs(self.headers.values("Record-Route"))

    @property
    def content_type(self) -> ContentType | None:
        """The Content-Type, or None."""
        value = self.headers.get("Content-Type")
        return None if value is None else parse_content_type(value)

    @property
    def expires(self) -> int | None:
        """The Expires header as delta-seconds (32-bit), or None."""
        value = self.headers.get("Expires")
        if value is None:
            return None
        if _DIGITS_RE.fullmatch(value) is None or int(value) > 0xFFFFFFFF:
            raise SipParseError(f"bad Expires {value!r}")
        return int(value)

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name}")
        return value

    def to_bytes(self) -> bytes:
        """Serialise; Content-Length always states the real body length."""
        lines = [self.start_line()]
        wrote_length = False
        for name, value in self.headers:
            if name == "Content-Length":
                if wrote_length:
                    continue
                value = str(len(self.body))
                wrote_length = True
            lines.append(f"{name}: {value}")
        if not wrote_length:
            lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


@dataclass(eq=True)
class SipRequest(SipMessage):
    """A SIP request.  ``uri`` is the parsed Request-URI."""

    method: str = "OPTIONS"
    uri: Uri = field(default_factory=lambda: SipUri("sip", "invalid"))
    version: str = "SIP/2.0"

    def start_line(self) -> str:
        """``METHOD uri SIP/2.0``."""
        return f"{self.method} {self.uri} {self.version}"


@dataclass(eq=True)
class SipResponse(SipMessage):
    """A SIP response."""

    status: int = 200
    reason: str = "OK"
    version: str = "SIP/2.0"

    def start_line(self) -> str:
        """``SIP/2.0 status reason``."""
        return f"{self.version} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        """1xx."""
        return self.status < 200

    @property
    def is_success(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    match = _HEAD_END_RE.search(data)
    if match is None:
        raise SipParseError("no blank line after the header fields")
    return data[: match.start()], data[match.end() :]


def _header_fields(lines: list[str], limits: SipLimits) -> list[tuple[str, str]]:
    """Unfold continuation lines and split ``name HCOLON value``."""
    fields: list[tuple[str, str]] = []
    max_line, max_headers = limits.max_line, limits.max_headers
    names = _FIELD_NAMES
    for line in lines:
        if len(line) > max_line:
            raise SipParseError(f"header line longer than {max_line}")
        if "\r" in line:
            raise SipParseError("bare CR in header line")
        first = line[:1]
        if first == " " or first == "\t":
            if not fields:
                raise SipParseError("continuation line before any header")
            name, value = fields[-1]
            fields[-1] = (name, (value + " " + line.strip(" \t")).strip(" \t"))
            continue
        raw, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"malformed header line {line[:80]!r}")
        canon = names.get(raw)
        if canon is None:
            name = raw.rstrip(" \t")
            if _TOKEN_RE.fullmatch(name) is None:
                raise SipParseError(f"malformed header line {line[:80]!r}")
            canon = canonical_name(name)
            if len(names) < _FIELD_NAMES_MAX:
                names[raw] = canon
        fields.append((canon, value.strip(" \t")))
        if len(fields) > max_headers:
            raise SipParseError(f"more than {max_headers} header fields")
    return fields


def _parse_content_length(value: str) -> int:
    if _DIGITS_RE.fullmatch(value) is None:
        raise SipFramingError(f"bad Content-Length {value!r}")
    return int(value)


def _start(line: str, headers: Headers, limits: SipLimits) -> tuple[SipMessage, SipError | None]:
    """Build the message object from the start line (syntax only).

    A bad or overlong Request-URI is returned as a deferred error, with a
    placeholder URI, so that the request can still be answered (400/414).
    """
    if _START_LINE_CTL_RE.search(line):
        # A bare CR or other control character would be forwarded verbatim.
        raise SipParseError("control character in the start line")
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if _VERSION_RE.fullmatch(version) is None:
            raise SipParseError(f"bad status line {line[:80]!r}")
        if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
            raise SipParseError(f"bad status code {code[:20]!r}")
        return SipResponse(headers, b"", int(code), reason, version), None
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"bad request line {line[:80]!r}")
    method, uri_text, version = parts
    if _TOKEN_RE.fullmatch(method) is None:
        raise SipParseError(f"bad method {method[:40]!r}")
    if _VERSION_RE.fullmatch(version) is None:
        raise SipParseError(f"bad SIP version {version[:20]!r}")
    deferred: SipError | None = None
    uri: Uri = _PLACEHOLDER_URI
    if len(uri_text) > limits.max_uri:
        deferred = SipUriTooLong(f"Request-URI longer than {limits.max_uri}")
    else:
        try:
            uri = parse_uri(uri_text)
        except SipError as exc:
            deferred = exc
    return SipRequest(headers, b"", method, uri, version), deferred


def parse_message(data: bytes, limits: SipLimits = DEFAULT_LIMITS) -> SipMessage:
    """Parse one complete message (datagram or framed stream message).

    Octets after ``Content-Length`` bytes of body are ignored (RFC 3261
    18.3); without Content-Length the body is the rest of the datagram.
    """
    if len(data) > limits.max_message:
        raise SipMessageTooLarge(f"message of {len(data)} octets")
    data = data.lstrip(b"\r\n")
    head_bytes, rest = _split_head(data)
    lines = head_bytes.decode("utf-8", "surrogateescape").split("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    headers = Headers._trusted(_header_fields(lines[1:], limits))
    message, deferred = _start(lines[0], headers, limits)
    try:
        if deferred is not None:
            raise deferred
        _validate(message, rest, limits)
    except SipError as exc:
        if isinstance(message, SipRequest) and _answerable(message):
            exc.request = message
        raise
    return message


def _answerable(request: SipRequest) -> bool:
    """Enough to build and route a response: top Via, To, one each of the four."""
    try:
        _ = request.top_via, request.to
    except SipError:
        return False
    return all(request.headers.count(n) == 1 for n in ("From", "To", "Call-ID", "CSeq"))


def _take_body(headers: Headers, rest: bytes, limits: SipLimits) -> bytes:
    lengths = headers.get_all("Content-Length")
    if not lengths:
        body = rest
    else:
        if len(lengths) > 1:
            raise SipParseError("more than one Content-Length")
        length = _parse_content_length(lengths[0])
        if length > len(rest):
            raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} octets received")
        body = rest[:length]
    if len(body) > limits.max_body:
        raise SipBodyTooLarge(f"body of {len(body)} octets")
    return body


def _validate(message: SipMessage, rest: bytes, limits: SipLimits) -> None:
    """Second pass: the fields every element relies on, then the body."""
    if isinstance(message, SipRequest) and message.version.upper() != "SIP/2.0":
        raise SipVersionNotSupported(f"version {message.version}")
    # One pass over the fields (they are stored under their canonical names).
    seen: set[str] = set()
    for name, _value in message.headers:
        if name in _SINGLE_VALUED:
            if name in seen:
                raise SipParseError(f"more than one {name}")
            seen.add(name)
    if not message.vias:
        raise SipParseError("missing Via")
    _ = message.from_, message.to, message.call_id
    cseq = message.cseq
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError(f"CSeq method {cseq.method} does not match {message.method}")
    message.body = _take_body(message.headers, rest, limits)
    _ = message.max_forwards, message.content_type, message.routes, message.record_routes
    contacts = message.contacts
    if any(c.star for c in contacts) and len(contacts) > 1:
        raise SipParseError("Contact '*' mixed with other contacts")
    if isinstance(message, SipRequest):
        if isinstance(message.uri, AbsoluteUri):
            raise SipUnsupportedUriScheme(f"scheme {message.uri.scheme!r}")
        if isinstance(message.uri, SipUri) and message.uri.headers:
            raise SipParseError("headers are not allowed in a Request-URI")


def check_require(request: SipRequest, supported: Collection[str]) -> None:
    """Raise 420 Bad Extension if Require lists tags outside ``supported``.

    ACK and CANCEL are exempt (RFC 3261 8.2.2.3).  The error's
    ``unsupported`` goes in the Unsupported header of the 420.
    """
    if request.method in ("ACK", "CANCEL"):
        return
    known = {tag.lower() for tag in supported}
    missing = tuple(t for t in request.headers.values("Require") if t.lower() not in known)
    if missing:
        error = SipBadExtension(f"unsupported option tags {', '.join(missing)}", missing)
        error.request = request
        raise error


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    tag_factory: Callable[[], str] = lambda: secrets.token_hex(8),
) -> SipResponse:
    """Build a response per RFC 3261 8.2.6: copy Via/From/To/Call-ID/CSeq.

    A To tag is added when the request had none, except for 100 Trying;
    ``to_tag`` fixes its value (a dialog must reuse one tag across responses).
    Record-Route is copied into 101-299 responses to dialog-creating requests
    (12.1.1) and Timestamp into 100 Trying (8.2.6.1).
    """
    headers = Headers()
    for value in request.headers.get_all("Via"):
        headers.copy_in("Via", value)
    headers.copy_in("From", request.headers.get("From") or "")
    to_value = request.headers.get("To") or ""
    if status != 100 and parse_name_addr(to_value).tag is None:
        tag = to_tag or tag_factory()
        if _TOKEN_RE.fullmatch(tag) is None:
            raise SipHeaderInjection(f"To tag is not a token: {tag!r}")
        to_value = f"{to_value};tag={tag}"
    headers.copy_in("To", to_value)
    headers.copy_in("Call-ID", request.headers.get("Call-ID") or "")
    headers.copy_in("CSeq", request.headers.get("CSeq") or "")
    if 100 < status < 300 and request.method in _DIALOG_CREATING:
        for value in request.headers.get_all("Record-Route"):
            headers.copy_in("Record-Route", value)
    timestamp = request.headers.get("Timestamp")
    if status == 100 and timestamp is not None:
        headers.copy_in("Timestamp", timestamp)
    for name, value in extra_headers:
        headers.add(name, value)
    phrase = check_header_text(reason) if reason is not None else REASON_PHRASES.get(status, "")
    response = SipResponse(headers, body, status, phrase)
    # The memo is keyed by header text, so the request's parses (Via, From,
    # CSeq...) are valid for the copied values as they are.
    response._memo.update(request._memo)
    return response


def build_ack_for_failure(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client INVITE transaction sends for a 3xx-6xx (RFC 3261 17.1.1.3)."""
    headers = Headers()
    headers.copy_in("Via", request.headers.values("Via")[0])
    for route in request.headers.get_all("Route"):
        headers.copy_in("Route", route)
    headers.add("Max-Forwards", "70")
    headers.copy_in("From", request.headers.get("From") or "")
    headers.copy_in("To", response.headers.get("To") or "")
    headers.copy_in("Call-ID", request.headers.get("Call-ID") or "")
    headers.add("CSeq", f"{request.cseq.number} ACK")
    return SipRequest(headers, b"", "ACK", request.uri)


def build_cancel(request: SipRequest) -> SipRequest:
    """A CANCEL for a pending INVITE (RFC 3261 9.1): same branch, same CSeq number."""
    headers = Headers()
    headers.copy_in("Via", request.headers.values("Via")[0])
    for route in request.headers.get_all("Route"):
        headers.copy_in("Route", route)
    headers.add("Max-Forwards", "70")
    headers.copy_in("From", request.headers.get("From") or "")
    headers.copy_in("To", request.headers.get("To") or "")
    headers.copy_in("Call-ID", request.headers.get("Call-ID") or "")
    headers.add("CSeq", f"{request.cseq.number} CANCEL")
    return SipRequest(headers, b"", "CANCEL", request.uri)


def new_branch(random_hex: Callable[[int], str] = secrets.token_hex) -> str:
    """A fresh RFC 3261 branch: the ``z9hG4bK`` magic cookie plus 64 random bits."""
    return "z9hG4bK" + random_hex(8)


def make_via(
    transport: str, host: str, port: int | None, branch: str, *, rport: bool = True
) -> str:
    """The Via value for a request we send; ``rport`` asks for RFC 3581 routing."""
    params: tuple[tuple[str, str | None], ...] = (("branch", branch), ("rport", None))
    via = Via(transport.upper(), host, port, params if rport else params[:1])
    text = str(via)
    prime_via(text, via)  # its responses carry this very text: no re-parse
    return text


def stamp_via_received(request: SipRequest, source_host: str, source_port: int) -> None:
    """Add ``received``/``rport`` to the top Via (RFC 3261 18.2.1, RFC 3581 4).

    ``received`` is added when sent-by differs from the packet source, and
    always when the client asked for ``rport``.
    """
    via = request.top_via
    wants_rport = via.has_param("rport") and via.rport is None
    if wants_rport:
        via = via.with_param("rport", str(source_port))
    if wants_rport or via.host.lower() != source_host.lower():
        via = via.with_param("received", source_host)
    text = str(via)
    request.headers.replace_first_value("Via", text)
    request._memo[("via", text)] = via  # the stamped value is read next: no re-parse
    prime_via(text, via)  # and again in every response to this request


def response_destination(via: Via, source: Destination) -> Destination:
    """Where a server transaction sends responses (RFC 3261 18.2.2, RFC 3581).

    Reliable transports answer on the connection the request came from; over
    UDP the response goes to ``received`` (else sent-by) at ``rport`` (else
    the sent-by port, default 5060).  ``maddr`` is not supported.
    """
    if source.reliable:
        return source
    host = via.received or via.host
    if via.rport is not None:
        return Destination(source.transport, host, via.rport)
    return Destination(source.transport, host, via.port or 5060)


class StreamFramer:
    """Cut a TCP/TLS byte stream into complete SIP messages (RFC 3261 18.3).

    :meth:`feed` returns complete frames to pass to :func:`parse_message`,
    and :data:`KEEPALIVE_PING` for each RFC 5626 double-CRLF keep-alive (the
    adapter answers with a single CRLF).  A missing Content-Length counts as
    zero.  Framing errors (bad Content-Length, oversize) are fatal: they are
    raised once and the framer then refuses input; the connection must close.
    """

    def __init__(self, limits: SipLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._scan_from = 0
        self._frame_end: int | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        """Octets held waiting for the rest of a message."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        """True after a fatal framing error."""
        return self._closed

    def feed(self, data: bytes) -> list[bytes]:
        """Add received octets; return every frame now complete."""
        if self._closed:
            raise SipFramingError("stream framer closed after a framing error")
        self._buffer += data
        frames: list[bytes] = []
        try:
            while (frame := self._next_frame()) is not None:
                frames.append(frame)
        except SipError:
            self._closed = True
            raise
        return frames

    def _skip_crlf(self) -> bytes | None | bool:
        """Drop CRLFs before a start line; returns a ping, False to wait, None to go on."""
        buf = self._buffer
        while bytes(buf[:1]) in (b"\r", b"\n"):
            if buf[:4] == KEEPALIVE_PING:
                del buf[:4]
                return KEEPALIVE_PING
            if len(buf) < 4 and KEEPALIVE_PING.startswith(bytes(buf)):
                return False
            del buf[: 2 if buf[:2] == b"\r\n" else 1]
        return None

    def _next_frame(self) -> bytes | None:
        if self._frame_end is None:
            skipped = self._skip_crlf()
            if skipped is False:
                return None
            if isinstance(skipped, bytes):
                return skipped
            if not self._find_head():
                return None
        assert self._frame_end is not None
        if len(self._buffer) < self._frame_end:
            return None
        frame = bytes(self._buffer[: self._frame_end])
        del self._buffer[: self._frame_end]
        self._frame_end = None
        self._scan_from = 0
        return frame

    def _find_head(self) -> bool:
        match = _HEAD_END_RE.search(self._buffer, max(0, self._scan_from - 3))
        if match is None:
            self._scan_from = len(self._buffer)
            if len(self._buffer) > self._limits.max_message:
                raise SipMessageTooLarge("header section without end")
            return False
        head = bytes(self._buffer[: match.start()]).decode("utf-8", "surrogateescape")
        length = _scan_content_length(head)
        if length > self._limits.max_body:
            raise SipBodyTooLarge(f"Content-Length {length}")
        end = match.end() + length
        if end > self._limits.max_message:
            raise SipMessageTooLarge(f"message of {end} octets")
        self._frame_end = end
        return True


def _scan_content_length(head: str) -> int:
    """Content-Length from a raw header section; all values must agree."""
    found: int | None = None
    for line in head.split("\n")[1:]:
        name, colon, value = line.partition(":")
        if colon and name.rstrip(" \t").lower() in ("content-length", "l"):
            length = _parse_content_length(value.strip(" \t\r"))
            if found is not None and found != length:
                raise SipFramingError("conflicting Content-Length values")
            found = length
    return 0 if found is None else found


def format_sent_by(host: str, port: int | None) -> str:
    """``host[:port]`` with IPv6 brackets, for building Via values."""
    return format_host(host) if port is None else f"{format_host(host)}:{port}"
