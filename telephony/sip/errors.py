"""The SIP exception tree.

Every error raised while reading SIP carries what to answer on the wire: the
status code and reason phrase of the response, and whether a response can be
built at all (RFC 3261 section 8.2.6 needs Via, From, To, Call-ID and CSeq).
When it can, :attr:`SipError.request` holds the partially validated request so
an adapter can call :func:`telephony.sip.message.build_response` on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telephony.sip.message import SipRequest

__all__ = [
    "SipBadExtension",
    "SipBodyTooLarge",
    "SipError",
    "SipFramingError",
    "SipHeaderInjection",
    "SipMessageTooLarge",
    "SipParseError",
    "SipUnsupportedUriScheme",
    "SipUriTooLong",
    "SipVersionNotSupported",
]


class SipError(Exception):
    """Base of every SIP protocol error.

    ``status``/``reason`` are the response to send when one is possible;
    ``request`` is set only when enough of a request was parsed to answer it.
    """

    default_status = 400
    default_reason = "Bad Request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = self.default_status if status is None else status
        self.reason = self.default_reason if reason is None else reason
        self.request: SipRequest | None = None

    @property
    def response_possible(self) -> bool:
        """True when :attr:`request` holds enough to build a response."""
        return self.request is not None

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.detail}"


class SipParseError(SipError):
    """Malformed message or header field: answer 400 Bad Request."""


class SipFramingError(SipParseError):
    """The message boundaries are lost (bad Content-Length on a stream).

    On a stream transport the connection must be closed after answering,
    because the next byte can no longer be trusted to start a message.
    """


class SipMessageTooLarge(SipError):
    """The whole message exceeds the configured size: 513 Message Too Large."""

    default_status = 513
    default_reason = "Message Too Large"


class SipBodyTooLarge(SipError):
    """The body exceeds the configured size: 413 Request Entity Too Large."""

    default_status = 413
    default_reason = "Request Entity Too Large"


class SipUriTooLong(SipError):
    """The Request-URI exceeds the configured length: 414 Request-URI Too Long."""

    default_status = 414
    default_reason = "Request-URI Too Long"


class SipUnsupportedUriScheme(SipError):
    """The Request-URI scheme is not sip/sips/tel: 416 Unsupported URI Scheme."""

    default_status = 416
    default_reason = "Unsupported URI Scheme"


class SipBadExtension(SipError):
    """A Require'd option tag is not supported: 420 Bad Extension.

    ``unsupported`` lists the tags to echo in the Unsupported header.
    """

    default_status = 420
    default_reason = "Bad Extension"

    def __init__(self, detail: str, unsupported: tuple[str, ...]) -> None:
        super().__init__(detail)
        self.unsupported = unsupported


class SipVersionNotSupported(SipError):
    """The SIP version is not 2.0: 505 Version Not Supported."""

    default_status = 505
    default_reason = "Version Not Supported"


class SipHeaderInjection(SipError, ValueError):
    """Locally supplied text would break the message framing (CR, LF, NUL).

    Raised when application code (e.g. an operator-typed display name) tries
    to put control characters into an outgoing header; never sent on the wire.
    """

    default_status = 500
    default_reason = "Server Internal Error"
