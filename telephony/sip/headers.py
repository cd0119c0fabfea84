"""SIP header fields: the container and the structured values.

:class:`Headers` keeps header fields in wire order, one entry per header
line, with names canonicalised (compact forms such as ``v`` or ``i`` expanded,
known names given their RFC spelling, unknown names kept as received) and
compared case-insensitively.  A header that arrived comma-joined stays one
entry; :meth:`Headers.values` splits list-valued headers (Via, Contact,
Route...) into their elements, honouring quotes and angle brackets.

Structured values are parsed on demand from the stored text with the small
scanners below, each raising :class:`SipParseError` (400) on bad syntax.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from telephony.sip.errors import SipHeaderInjection, SipParseError
from telephony.sip.uri import (
    AbsoluteUri,
    Params,
    SipUri,
    Uri,
    format_host,
    memoised,
    parse_host_port,
    parse_uri,
)

__all__ = [
    "COMPACT_FORMS",
    "CSeq",
    "ContentType",
    "Headers",
    "NameAddr",
    "Via",
    "canonical_name",
    "check_header_text",
    "parse_cseq",
    "parse_name_addr",
    "parse_name_addrs",
    "parse_params",
    "parse_via",
    "prime_via",
    "parse_vias",
    "split_list",
]

# RFC 3261 section 7.3.3 and later RFCs' compact forms.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES = (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language",
    "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires",
    "From", "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version",
    "Organization", "Priority", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Require", "Record-Route", "Reply-To", "Require", "Retry-After",
    "Route", "Server", "Subject", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
    "RAck", "RSeq", "Event", "Allow-Events", "Subscription-State", "Refer-To",
    "Referred-By", "Replaces", "Session-Expires", "Min-SE", "Path",
    "Service-Route", "Reason", "P-Asserted-Identity", "P-Preferred-Identity",
    "Privacy", "Identity", "Accept-Contact", "Reject-Contact",
    "Request-Disposition", "History-Info", "Diversion",
)
_CANONICAL: dict[str, str] = {n.lower(): n for n in _KNOWN_NAMES}
_CANONICAL.update({k: v for k, v in COMPACT_FORMS.items()})

# Header fields whose grammar is a comma-separated list (RFC 3261 section 7.3.1).
_LIST_HEADERS = frozenset(
    n.lower()
    for n in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "In-Reply-To", "Proxy-Require", "Record-Route", "Require",
        "Route", "Supported", "Unsupported", "Via", "Warning", "Allow-Events",
        "Path", "Service-Route", "Reason", "P-Asserted-Identity",
        "History-Info", "Diversion", "Accept-Contact", "Reject-Contact",
    )
)

_TOKEN_CHARS = "A-Za-z0-9\\-.!%*_+`'~"
_TOKEN_RE = re.compile(f"[{_TOKEN_CHARS}]+")
_FORBIDDEN_RE = re.compile(r"[\x00\r\n]")
# gen-value is token / host / quoted-string; ':' admits bare IPv6 (received=).
_GEN_VALUE_RE = re.compile(f"[{_TOKEN_CHARS}:]+")
_WS_RE = re.compile(r"[ \t]*")
_VIA_HEAD_RE = re.compile(
    f"([{_TOKEN_CHARS}]+)/([{_TOKEN_CHARS}]+)/([{_TOKEN_CHARS}]+)[ \t]*([^; \t]*)")
_SIMPLE_PARAM_RE = re.compile(f";([{_TOKEN_CHARS}]+)(?:=([{_TOKEN_CHARS}:]+))?")
_UNTIL_GT = re.compile(r"[^>]*")
_UNTIL_BRACKET = re.compile(r"[^\]]*")
_UNTIL_HOST_END = re.compile(r"[^; \t]*")
_UNTIL_ADDR_END = re.compile(r"[^; \t,]*")


def canonical_name(name: str) -> str:
    """Expand compact forms and give known headers their RFC spelling."""
    return _CANONICAL.get(name.lower(), name)


_NAME_CACHE_SIZE = 512
# name as written by the caller -> (canonical name, known?, list-valued?).  Header
# lookups by the same few literal names happen dozens of times per message, so
# the lower()/dict/frozenset work is done once per spelling; bounded because
# names can also come from the network.
_LOOKUPS: dict[str, tuple[str, bool, bool]] = {}
# Locally supplied names already checked to be tokens (same bound, same reason).
_CHECKED: dict[str, str] = {}


def _name_info(name: str) -> tuple[str, bool, bool]:
    found = _LOOKUPS.get(name)
    if found is None:
        canon = _CANONICAL.get(name.lower())
        known = canon is not None
        canon = canon or name
        found = (canon, known, canon.lower() in _LIST_HEADERS)
        if len(_LOOKUPS) < _NAME_CACHE_SIZE:
            _LOOKUPS[name] = found
    return found


def check_header_text(text: str) -> str:
    """Refuse CR, LF and NUL in locally supplied header text (header injection)."""
    if _FORBIDDEN_RE.search(text):
        raise SipHeaderInjection(f"control character in header text {text!r}")
    return text


def _checked_name(name: str) -> str:
    """Canonical form of a locally supplied header name, which must be a token."""
    canon = _CHECKED.get(name)
    if canon is not None:
        return canon
    if _TOKEN_RE.fullmatch(name) is None:
        raise SipHeaderInjection(f"header name is not a token: {name!r}")
    canon = canonical_name(name)
    if len(_CHECKED) < _NAME_CACHE_SIZE:
        _CHECKED[name] = canon
    return canon


def split_list(value: str) -> list[str]:
    """Split a list-valued header on commas outside quotes and <...>."""
    if "," not in value:
        stripped = value.strip(" \t")
        return [stripped] if stripped else []
    items: list[str] = []
    start = 0
    in_quotes = in_angle = escaped = False
    for pos, ch in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            items.append(value[start:pos].strip(" \t"))
            start = pos + 1
    items.append(value[start:].strip(" \t"))
    return items


class Headers:
    """Ordered, case-insensitive header fields; one entry per header line."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [
            (_checked_name(n), check_header_text(v)) for n, v in items
        ]

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]]) -> Headers:
        """Build from parser output (names already canonical, values checked)."""
        obj = cls.__new__(cls)
        obj._items = items
        return obj

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        """A shallow copy (values are immutable strings)."""
        return Headers._trusted(list(self._items))

    def get(self, name: str) -> str | None:
        """The first value of ``name``, or None."""
        canon, known, _ = _name_info(name)
        if known:
            # Known names are stored canonically, so an exact compare suffices.
            for key, value in self._items:
                if key == canon:
                    return value
            return None
        lname = name.lower()
        for key, value in self._items:
            if key.lower() == lname:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every header line's value for ``name``, in order (not comma-split)."""
        canon, known, _ = _name_info(name)
        if known:
            return [v for k, v in self._items if k == canon]
        lname = name.lower()
        return [v for k, v in self._items if k.lower() == lname]

    def first_value(self, name: str) -> str | None:
        """The first element of ``name`` (what ``values(name)[0]`` is), or None."""
        canon, known, listed = _name_info(name)
        lname = canon.lower()
        for key, line in self._items:
            if key == canon if known else key.lower() == lname:
                if not listed:
                    return line
                items = split_list(line)
                if items:
                    return items[0]
        return None

    def values(self, name: str) -> list[str]:
        """All elements of ``name``: list headers are comma-split, others per line."""
        lines = self.get_all(name)
        if not _name_info(name)[2]:
            return lines
        return [item for line in lines for item in split_list(line)]

    def count(self, name: str) -> int:
        """Number of header lines named ``name``."""
        return len(self.get_all(name))

    def add(self, name: str, value: str) -> None:
        """Append a header line (checked for control characters)."""
        self._items.append((_checked_name(name), check_header_text(value)))

    def copy_in(self, name: str, value: str) -> None:
        """Append a value taken from a parsed message (request to response, ...).

        Such values may legitimately hold quoted-pair control characters such
        as NUL (RFC 4475 intmeth), so only CR and LF, which would break the
        framing, are refused.
        """
        if "\r" in value or "\n" in value:
            raise SipHeaderInjection(f"line break in copied header {name}")
        self._items.append((_checked_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before all others (e.g. a new top Via)."""
        self._items.insert(0, (_checked_name(name), check_header_text(value)))

    def set(self, name: str, value: str) -> None:
        """Replace all lines of ``name`` with one line, keeping the first position."""
        canon = _checked_name(name)
        check_header_text(value)
        lname = canon.lower()
        out: list[tuple[str, str]] = []
        placed = False
        for key, old in self._items:
            if key.lower() == lname:
                if not placed:
                    out.append((canon, value))
                    placed = True
            else:
                out.append((key, old))
        if not placed:
            out.append((canon, value))
        self._items = out

    def remove(self, name: str) -> None:
        """Remove every line of ``name``."""
        lname = canonical_name(name).lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != lname]

    def replace_first_value(self, name: str, value: str) -> None:
        """Replace the first element of a list header (e.g. stamp the top Via)."""
        check_header_text(value)
        lname = canonical_name(name).lower()
        for index, (key, line) in enumerate(self._items):
            if key.lower() == lname:
                items = split_list(line)
                items[0:1] = [value]
                self._items[index] = (key, ", ".join(items))
                return
        raise KeyError(name)

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first element of a list header (e.g. top Via)."""
        lname = canonical_name(name).lower()
        for index, (key, value) in enumerate(self._items):
            if key.lower() != lname:
                continue
            items = split_list(value)
            if len(items) <= 1:
                del self._items[index]
            else:
                self._items[index] = (key, ", ".join(items[1:]))
            return items[0] if items else None
        return None


class _Scanner:
    """A cursor over one header value with the RFC 3261 separators (SWS-aware)."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> SipParseError:
        """A parse error naming ``what`` was expected and where."""
        return SipParseError(f"{what} at offset {self.pos} in {self.text!r}")

    def skip_ws(self) -> None:
        """Skip spaces and tabs (folding is already undone)."""
        text, pos = self.text, self.pos
        if pos < len(text) and text[pos] in " \t":
            match = _WS_RE.match(text, pos)
            assert match is not None
            self.pos = match.end()

    def at_end(self) -> bool:
        """True if only whitespace remains."""
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        """The next character, or "" at the end."""
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def accept(self, ch: str) -> bool:
        """Skip SWS and consume ``ch`` if it is next."""
        self.skip_ws()
        if self.peek() == ch:
            self.pos += 1
            return True
        return False

    def expect(self, ch: str) -> None:
        """Consume ``ch`` (after SWS) or fail."""
        if not self.accept(ch):
            raise self.fail(f"expected {ch!r}")

    def token(self) -> str:
        """Consume and return a token (after SWS) or fail."""
        self.skip_ws()
        match = _TOKEN_RE.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a token")
        self.pos = match.end()
        return match.group()

    def until(self, pattern: re.Pattern[str]) -> str:
        """Raw text matched by a ``[^stops]*`` pattern (one of the _UNTIL_* below)."""
        match = pattern.match(self.text, self.pos)
        assert match is not None
        self.pos = match.end()
        return match.group()

    def quoted_string(self) -> str:
        """Parse a quoted-string and return its unescaped content."""
        self.skip_ws()
        if self.peek() != '"':
            raise self.fail("expected a quoted string")
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                if self.pos + 1 >= len(text) or text[self.pos + 1] in "\r\n":
                    break
                out.append(text[self.pos + 1])
                self.pos += 2
                continue
            if ch < " " and ch != "\t" or ch == "\x7f":
                raise self.fail("control character in quoted string")
            out.append(ch)
            self.pos += 1
        raise self.fail("unterminated quoted string")


def quote_string(text: str) -> str:
    """Quote ``text`` as a quoted-string, escaping backslash, quote and controls."""
    out = ['"']
    for ch in text:
        if ch in '"\\' or (ch < " " and ch != "\t") or ch == "\x7f":
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


def _param_value(scanner: _Scanner) -> str:
    scanner.skip_ws()
    if scanner.peek() == '"':
        return quote_string(scanner.quoted_string())
    if scanner.peek() == "[":
        value = scanner.until(_UNTIL_BRACKET)
        if scanner.peek() != "]":
            raise scanner.fail("unterminated IPv6 reference")
        scanner.pos += 1
        return value + "]"
    match = _GEN_VALUE_RE.match(scanner.text, scanner.pos)
    if match is None:
        raise scanner.fail("expected a parameter value")
    scanner.pos = match.end()
    return match.group()


def _scan_params(scanner: _Scanner, stop: str = "") -> Params:
    """Parse ``*(SEMI generic-param)``; values keep their quotes."""
    # Fast path for what nearly every peer sends: ``;name`` / ``;name=token``
    # with no whitespace, quotes or brackets.  It only commits when it consumed
    # everything up to the end (or a stop character); anything else is re-read
    # from the start by the general scanner below, so results are identical.
    text, pos = scanner.text, scanner.pos
    end = len(text)
    simple: list[tuple[str, str | None]] = []
    while pos < end and text[pos] == ";":
        match = _SIMPLE_PARAM_RE.match(text, pos)
        if match is None:
            break
        simple.append((match.group(1), match.group(2)))
        pos = match.end()
    if pos >= end or (stop and text[pos] in stop):
        scanner.pos = pos
        return tuple(simple)
    return _scan_params_general(scanner, stop)


def _scan_params_general(scanner: _Scanner, stop: str = "") -> Params:
    """The full ``*(SEMI generic-param)`` grammar: whitespace, quoted and IPv6 values."""
    params: list[tuple[str, str | None]] = []
    while True:
        scanner.skip_ws()
        if scanner.at_end() or scanner.peek() in stop:
            return tuple(params)
        scanner.expect(";")
        name = scanner.token()
        value: str | None = None
        if scanner.accept("="):
            value = _param_value(scanner)
        params.append((name, value))


def parse_params(text: str) -> Params:
    """Parse a standalone ``;a=b;c`` header parameter string."""
    scanner = _Scanner(text)
    params = _scan_params(scanner)
    if not scanner.at_end():
        raise scanner.fail("trailing characters after parameters")
    return params


def _lookup(params: Params, name: str) -> tuple[bool, str | None]:
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return True, value
    return False, None


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _unquote(value: str | None) -> str | None:
    if value is not None and value.startswith('"'):
        return _Scanner(value).quoted_string()
    return value


@dataclass(frozen=True, slots=True)
class Via:
    """One Via element: ``SIP/2.0/UDP host:port;branch=...;received=...``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def param(self, name: str) -> str | None:
        """Value of Via parameter ``name`` (quotes removed)."""
        return _unquote(_lookup(self.params, name)[1])

    def has_param(self, name: str) -> bool:
        """True if parameter ``name`` is present, with or without value."""
        return _lookup(self.params, name)[0]

    @property
    def branch(self) -> str | None:
        """The branch parameter (transaction id when it has the magic cookie)."""
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """The received parameter, if any."""
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The rport value (RFC 3581); None if absent or empty."""
        value = self.param("rport")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def sent_by(self) -> str:
        """``host[:port]`` as used for transaction matching."""
        host = format_host(self.host).lower()
        return host if self.port is None else f"{host}:{self.port}"

    def with_param(self, name: str, value: str | None) -> Via:
        """Copy with ``name`` set to ``value`` (replacing an existing one)."""
        lname = name.lower()
        kept = tuple(p for p in self.params if p[0].lower() != lname)
        # Direct construction: dataclasses.replace() introspects the fields each call.
        return Via(self.transport, self.host, self.port, (*kept, (name, value)), self.protocol)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return (
            f"{self.protocol}/{self.transport} {format_host(self.host)}{port}"
            f"{_format_params(self.params)}"
        )


_VIA_PRIMED: dict[str, Via] = {}
_VIA_PRIMED_MAX = 4096


def prime_via(text: str, via: Via) -> None:
    """Remember that ``text`` (which is ``str(via)``) parses to ``via``.

    For Via values this element builds itself (:func:`~telephony.sip.message.make_via`,
    the received/rport stamp): their branch is new, so the parse memo would
    miss once for the request and again for its first response.  Bounded:
    the oldest entries go first.
    """
    primed = _VIA_PRIMED
    if len(primed) >= _VIA_PRIMED_MAX:
        del primed[next(iter(primed))]
    primed[text] = via


def parse_via(text: str) -> Via:
    """Parse one Via element (already split from its list)."""
    via = _VIA_PRIMED.get(text)
    if via is not None:
        return via
    return _parse_via_memo(text)


def _parse_via(text: str) -> Via:
    scanner = _Scanner(text)
    head = _VIA_HEAD_RE.match(text)
    if head is not None:  # no whitespace around the slashes: the usual form, in one step
        name, version, transport, hostport = head.groups()
        transport = transport.upper()
        scanner.pos = head.end()
    else:
        name = scanner.token()
        scanner.expect("/")
        version = scanner.token()
        scanner.expect("/")
        transport = scanner.token().upper()
        scanner.skip_ws()
        hostport = scanner.until(_UNTIL_HOST_END)
    host, port = parse_host_port(hostport)
    params = _scan_params(scanner)
    for key, value in params:
        if key.lower() in ("branch", "received", "maddr", "ttl") and value is None:
            raise SipParseError(f"Via parameter {key} needs a value in {text!r}")
    rport = _lookup(params, "rport")[1]
    if rport is not None and (not rport.isdigit() or int(rport) > 65535):
        raise SipParseError(f"bad rport in {text!r}")
    return Via(transport, host, port, params, f"{name.upper()}/{version}")


_parse_via_memo = memoised(_parse_via)
parse_via.__wrapped__ = _parse_via  # type: ignore[attr-defined]  # the plain parser, for tests


def parse_vias(values: Iterable[str]) -> list[Via]:
    """Parse every Via element of the already-split values (top first)."""
    return [parse_via(v) for v in values]


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From/To/Contact/Route value: display name, URI and header parameters.

    ``star`` marks the ``Contact: *`` wildcard (then ``uri`` is None).
    """

    uri: Uri | None
    display_name: str | None = None
    params: Params = ()
    star: bool = False

    def param(self, name: str) -> str | None:
        """Header parameter ``name`` (quotes removed)."""
        return _unquote(_lookup(self.params, name)[1])

    def has_param(self, name: str) -> bool:
        """True if header parameter ``name`` is present."""
        return _lookup(self.params, name)[0]

    @property
    def tag(self) -> str | None:
        """The tag parameter (From/To)."""
        return self.param("tag")

    @property
    def expires(self) -> int | None:
        """Contact ``expires`` parameter; raises 400 if not a 32-bit number."""
        value = self.param("expires")
        if value is None:
            return None
        if not value.isdigit() or not value.isascii() or int(value) > 0xFFFFFFFF:
            raise SipParseError(f"bad expires parameter {value!r}")
        return int(value)

    @property
    def sip_uri(self) -> SipUri:
        """The URI as a :class:`SipUri`; raises 400 if it is another scheme."""
        if not isinstance(self.uri, SipUri):
            raise SipParseError(f"expected a SIP URI, got {self.uri}")
        return self.uri

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """Copy with header parameter ``name`` set."""
        lname = name.lower()
        kept = tuple(p for p in self.params if p[0].lower() != lname)
        return NameAddr(self.uri, self.display_name, (*kept, (name, value)), self.star)

    def __str__(self) -> str:
        if self.star:
            return "*"
        display = "" if self.display_name is None else quote_string(self.display_name) + " "
        return f"{display}<{self.uri}>{_format_params(self.params)}"


# One flat character class (no nested quantifiers) so a long unbracketed
# value cannot make the regex backtrack exponentially.
_DISPLAY_TOKENS_RE = re.compile(f"[ \t]*([{_TOKEN_CHARS} \t]*)<")


@memoised
def parse_name_addr(text: str) -> NameAddr:
    """Parse ``[display] <uri> *(;param)`` or ``addr-spec *(;param)``."""
    scanner = _Scanner(text)
    display: str | None = None
    scanner.skip_ws()
    if scanner.peek() == '"':
        display = scanner.quoted_string()
        scanner.expect("<")
        bracketed = True
    else:
        match = _DISPLAY_TOKENS_RE.match(text)
        bracketed = match is not None
        if match is not None:
            tokens = match.group(1).strip(" \t")
            display = " ".join(tokens.split()) if tokens else None
            scanner.pos = match.end()
    if bracketed:
        # LAQUOT is SWS "<" and RAQUOT is ">" SWS: no whitespace inside (badaspec).
        uri_text = scanner.until(_UNTIL_GT)
        if scanner.peek() != ">":
            raise scanner.fail("unterminated <")
        scanner.pos += 1
    else:
        if scanner.peek() == "*":
            scanner.pos += 1
            if not scanner.at_end():
                raise scanner.fail("'*' must stand alone")
            return NameAddr(None, star=True)
        uri_text = scanner.until(_UNTIL_ADDR_END)
        if "?" in uri_text:
            raise SipParseError(f"URI with headers must be in <> in {text!r}")
    uri = parse_uri(uri_text)
    params = _scan_params(scanner)
    for key, value in params:
        if key.lower() == "tag" and value is None:
            raise SipParseError(f"tag parameter needs a value in {text!r}")
    return NameAddr(uri, display, params)


def parse_name_addrs(values: Iterable[str]) -> list[NameAddr]:
    """Parse each already-split element of a Contact/Route/Record-Route list."""
    return [parse_name_addr(v) for v in values]


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header: sequence number (32-bit) and method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_CSEQ_RE = re.compile(f"[ \t]*([0-9]{{1,10}})[ \t]+([{_TOKEN_CHARS}]+)[ \t]*")


@memoised
def parse_cseq(text: str) -> CSeq:
    """Parse ``1*DIGIT LWS Method``; the number must fit 32 bits (RFC 3261 20.16)."""
    match = _CSEQ_RE.fullmatch(text)
    if match is None or int(match.group(1)) > 0xFFFFFFFF:
        raise SipParseError(f"bad CSeq {text!r}")
    return CSeq(int(match.group(1)), match.group(2))


@dataclass(frozen=True, slots=True)
class ContentType:
    """A media type with parameters (``application/sdp``)."""

    type: str
    subtype: str
    params: Params = ()

    @property
    def mime(self) -> str:
        """``type/subtype`` in lower case, for comparisons."""
        return f"{self.type}/{self.subtype}".lower()

    def param(self, name: str) -> str | None:
        """Parameter ``name`` with quotes removed (e.g. boundary)."""
        return _unquote(_lookup(self.params, name)[1])

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{_format_params(self.params)}"


def parse_content_type(text: str) -> ContentType:
    """Parse ``type/subtype *(;param)``."""
    scanner = _Scanner(text)
    major = scanner.token()
    scanner.expect("/")
    minor = scanner.token()
    params = _scan_params(scanner)
    return ContentType(major, minor, params)


def uri_is_absolute(uri: Uri | None) -> bool:
    """True for URIs of schemes this stack does not route (absoluteURI)."""
    return isinstance(uri, AbsoluteUri)
