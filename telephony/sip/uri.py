"""SIP, SIPS and TEL URIs (RFC 3261 section 19.1 and 25.1, RFC 3966).

URIs are immutable values.  Escaped text (``%HH``) is kept exactly as
received in :attr:`SipUri.user`, parameters and headers, because RFC 3261
compares unescaped forms but forwards the original; :meth:`SipUri.user_unquoted`
gives the decoded user part (which may contain NUL, see RFC 4475 escnull).

Other schemes (``http:``, ``isbn:`` ...) parse as :class:`AbsoluteUri` so
that header fields such as To can carry them; a Request-URI with such a
scheme is answered 416 by the message parser.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar
from urllib.parse import unquote_to_bytes

from telephony.sip.errors import SipParseError

__all__ = [
    "AbsoluteUri",
    "SipUri",
    "TelUri",
    "Uri",
    "format_host",
    "parse_host_port",
    "parse_uri",
]

# RFC 3261 section 25.1 character classes, as regex fragments.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")
_PARAMCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+")
_HNVCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})*")
_HNAME_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# absoluteURI's opaque/hierarchical part: uric characters (RFC 2396).
_URIC_RE = re.compile(rf"(?:[{_UNRESERVED};/?:@&=+$,\[\]#]|{_ESCAPED})+")
_TEL_NUMBER_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")

Params = tuple[tuple[str, str | None], ...]


def _param_lookup(params: Params, name: str) -> tuple[bool, str | None]:
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return True, value
    return False, None


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def format_host(host: str) -> str:
    """Return ``host`` as written in a URI or Via: IPv6 gets brackets."""
    return f"[{host}]" if ":" in host else host


def _check_host(host: str, original: str) -> str:
    if host.startswith("["):
        if not host.endswith("]"):
            raise SipParseError(f"unterminated IPv6 reference in {original!r}")
        inner = host[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise SipParseError(f"bad IPv6 address in {original!r}") from None
        return inner
    if not host or _HOSTNAME_RE.fullmatch(host) is None:
        raise SipParseError(f"bad host {host!r} in {original!r}")
    return host


_T = TypeVar("_T")
MEMO_SIZE = 4096
"""Distinct header texts whose parse is remembered per parser (bounded memory)."""
MEMO_MAX_TEXT = 512
"""Longer texts are parsed every time, so a hostile peer cannot fill the memo with big keys."""


def memoised(parser: Callable[[str], _T]) -> Callable[[str], _T]:
    """Remember ``parser``'s results for recently seen texts (a fast path).

    The same From, To, Via and URI texts arrive again and again within a
    dialog (request, 100, 180, 200, ACK, BYE...), and every parsed value is a
    frozen dataclass, so one result can be shared.  Errors are not cached
    (bad input is re-parsed and raises again); the memo is an LRU of
    :data:`MEMO_SIZE` entries of at most :data:`MEMO_MAX_TEXT` characters.
    """
    cached = functools.lru_cache(maxsize=MEMO_SIZE)(parser)

    @functools.wraps(parser)
    def parse(text: str) -> _T:
        if len(text) > MEMO_MAX_TEXT:
            return parser(text)
        return cached(text)

    return parse


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` (IPv6 in brackets); returns the bare host."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {text!r}")
        host_text, rest = text[: end + 1], text[end + 1 :]
    else:
        host_text, sep, port_text = text.partition(":")
        rest = sep + port_text
    host = _check_host(host_text, text)
    if not rest:
        return host, None
    if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii():
        raise SipParseError(f"bad port in {text!r}")
    if len(rest) > 6 or int(rest[1:]) > 65535:
        raise SipParseError(f"port out of range in {text!r}")
    return host, int(rest[1:])


def _parse_params(text: str, original: str) -> Params:
    """Parse ``;name[=value]...`` URI parameters (text starts after the first ;)."""
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if _PARAMCHARS_RE.fullmatch(name) is None:
            raise SipParseError(f"bad URI parameter {item!r} in {original!r}")
        if eq and _PARAMCHARS_RE.fullmatch(value) is None:
            raise SipParseError(f"bad URI parameter value {item!r} in {original!r}")
        params.append((name, value if eq else None))
    return tuple(params)


def _parse_uri_headers(text: str, original: str) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if not eq or _HNAME_RE.fullmatch(name) is None:
            raise SipParseError(f"bad URI header {item!r} in {original!r}")
        if _HNVCHARS_RE.fullmatch(value) is None:
            raise SipParseError(f"bad URI header value {item!r} in {original!r}")
        headers.append((name, value))
    return tuple(headers)


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI; ``host`` is bare (no IPv6 brackets)."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def secure(self) -> bool:
        """True for ``sips:``."""
        return self.scheme == "sips"

    def param(self, name: str) -> str | None:
        """Value of URI parameter ``name`` (case-insensitive); None if absent or valueless."""
        return _param_lookup(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        """True if URI parameter ``name`` is present (with or without value)."""
        return _param_lookup(self.params, name)[0]

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """Copy with parameter ``name`` set (replacing an existing one)."""
        lname = name.lower()
        kept = tuple(p for p in self.params if p[0].lower() != lname)
        return SipUri(self.scheme, self.host, self.user, self.password, self.port,
                      (*kept, (name, value)), self.headers)

    def without_headers(self) -> SipUri:
        """Copy with the ``?headers`` part removed (RFC 3261 section 19.1.5)."""
        return replace(self, headers=())

    def user_unquoted(self) -> bytes | None:
        """The user part with ``%HH`` escapes decoded (may contain NUL)."""
        return None if self.user is None else unquote_to_bytes(self.user)

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":" + self.password)
            parts.append("@")
        parts.append(format_host(self.host))
        if self.port is not None:
            parts.append(f":{self.port}")
        parts.append(_format_params(self.params))
        if self.headers:
            parts.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966): the number plus its parameters."""

    number: str
    params: Params = ()

    scheme = "tel"

    @property
    def is_global(self) -> bool:
        """True for a ``+``-prefixed E.164 number."""
        return self.number.startswith("+")

    def param(self, name: str) -> str | None:
        """Value of parameter ``name`` (case-insensitive)."""
        return _param_lookup(self.params, name)[1]

    def __str__(self) -> str:
        return f"tel:{self.number}{_format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other URI scheme, kept opaque (RFC 3261 absoluteURI)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | TelUri | AbsoluteUri


def _parse_sip(scheme: str, rest: str, original: str) -> SipUri:
    userinfo, at, hostpart = rest.rpartition("@")
    user: str | None = None
    password: str | None = None
    if at:
        user, colon, pw = userinfo.partition(":")
        if _USER_RE.fullmatch(user) is None:
            raise SipParseError(f"bad user part in {original!r}")
        if colon:
            if _PASSWORD_RE.fullmatch(pw) is None:
                raise SipParseError(f"bad password in {original!r}")
            password = pw
    hostpart, qmark, header_text = hostpart.partition("?")
    hostport, semi, param_text = hostpart.partition(";")
    host, port = parse_host_port(hostport)
    params = _parse_params(param_text, original) if semi else ()
    headers = _parse_uri_headers(header_text, original) if qmark else ()
    return SipUri(scheme, host, user, password, port, params, headers)


def _parse_tel(rest: str, original: str) -> TelUri:
    number, semi, param_text = rest.partition(";")
    if _TEL_NUMBER_RE.fullmatch(number) is None:
        raise SipParseError(f"bad telephone number in {original!r}")
    params = _parse_params(param_text, original) if semi else ()
    return TelUri(number, params)


@memoised
def parse_uri(text: str) -> Uri:
    """Parse a URI; raise :class:`SipParseError` if it is malformed.

    sip/sips/tel are parsed fully; other schemes become :class:`AbsoluteUri`.
    """
    scheme, colon, rest = text.partition(":")
    if not colon or _SCHEME_RE.fullmatch(scheme) is None:
        raise SipParseError(f"not a URI: {text!r}")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return _parse_sip(lscheme, rest, text)
    if lscheme == "tel":
        return _parse_tel(rest, text)
    if _URIC_RE.fullmatch(rest) is None:
        raise SipParseError(f"bad URI {text!r}")
    return AbsoluteUri(lscheme, rest)
