"""One exception tree for the SMS subsystem.

Every error raised by :mod:`sms` derives from :class:`SmsError`.  Errors that
have an answer on the wire carry it: SMPP errors carry the ``command_status``
to put in the ``generic_nack`` or ``*_resp`` we send back.
"""

from __future__ import annotations


class SmsError(Exception):
    """Root of every error raised by the :mod:`sms` package."""


class EncodingError(SmsError, ValueError):
    """Text cannot be encoded as asked (character outside the alphabet, control character)."""


class TooManyParts(SmsError, ValueError):
    """A message would need more concatenated parts than the configured cap."""

    def __init__(self, parts_needed: int, max_parts: int) -> None:
        """Record how many parts the text needs and the cap it exceeded."""
        super().__init__(f"message needs {parts_needed} parts, the cap is {max_parts}")
        self.parts_needed = parts_needed
        self.max_parts = max_parts


class MsisdnError(SmsError, ValueError):
    """A phone number cannot be normalised to E.164."""

    def __init__(self, raw: str, reason: str) -> None:
        """Keep the offending input and a human-readable reason."""
        super().__init__(f"invalid phone number {raw!r}: {reason}")
        self.raw = raw
        self.reason = reason


class PduError(SmsError):
    """A TS 23.040 TPDU cannot be encoded or decoded."""


class PduDecodeError(PduError, ValueError):
    """A received TPDU is truncated or malformed."""


class PduEncodeError(PduError, ValueError):
    """A TPDU cannot be built from the given fields."""


# SMPP 3.4 command_status values used as the wire answer for our errors.
_ESME_RINVMSGLEN = 0x00000001
_ESME_RINVCMDLEN = 0x00000002
_ESME_RINVCMDID = 0x00000003
_ESME_RINVBNDSTS = 0x00000004
_ESME_RSYSERR = 0x00000008


class SmppError(SmsError):
    """Any SMPP 3.4 protocol error; ``command_status`` is what to answer on the wire."""

    command_status: int = _ESME_RSYSERR

    def __init__(self, message: str, *, command_status: int | None = None,
                 sequence_number: int | None = None, command_id: int | None = None) -> None:
        """Build the error; sequence number and command id are the offending PDU's, if known."""
        super().__init__(message)
        if command_status is not None:
            self.command_status = command_status
        self.sequence_number = sequence_number
        self.command_id = command_id


class SmppDecodeError(SmppError, ValueError):
    """A received PDU is malformed (truncated field, over-long string, bad TLV)."""

    command_status = _ESME_RINVMSGLEN


class CommandLengthError(SmppDecodeError):
    """``command_length`` is below the header size or above our limit; the stream is lost."""

    command_status = _ESME_RINVCMDLEN


class UnknownCommandError(SmppDecodeError):
    """``command_id`` is not one we understand."""

    command_status = _ESME_RINVCMDID


class SmppEncodeError(SmppError, ValueError):
    """A PDU cannot be encoded (field too long, value out of range)."""


class SmppStateError(SmppError):
    """The operation is not allowed in the session's current state."""

    command_status = _ESME_RINVBNDSTS


class WindowFull(SmppError):
    """No room for another outstanding submit_sm (window full or throttled)."""

    def __init__(self, message: str, *, retry_at: float | None = None) -> None:
        """``retry_at`` is the ``now`` at which a throttle pause ends, if throttled."""
        super().__init__(message)
        self.retry_at = retry_at


class SmppTimeout(SmppError, TimeoutError):
    """A request got no response within the response timeout."""
