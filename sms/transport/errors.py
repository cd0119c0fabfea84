"""Errors of the SMPP transport, as the campaign layer sees them.

The split that matters to a caller deciding whether to send again:

* :class:`SubmitTemporaryError` - the SMSC did not take the message (throttled
  past our retries, queue full, transport stopped before it was sent): safe to
  submit again later.
* :class:`SubmitPermanentError` - the SMSC refused it (bad number, ...): do not resend.
* :class:`SubmitOutcomeUnknownError` - it went out but no answer came (response
  timeout, link lost): the SMSC may have taken it.  Resending blindly would
  text a resident twice; reconcile first (receipts, operator decision).
"""

from __future__ import annotations

from ..errors import SmppError
from ..smpp.codec import CommandStatus, status_name


class SmppTransportError(SmppError):
    """Anything the asyncio SMPP transport raises."""


class SmppBindRefused(SmppTransportError, ConnectionError):
    """The SMSC refused our bind (``command_status`` says why: password, system id, ...)."""


class SubmitError(SmppTransportError):
    """A message (or some of its parts) was not accepted.

    ``accepted`` holds the message ids of parts that the SMSC did accept,
    so a partly sent long message is not mistaken for an unsent one.
    """

    def __init__(self, message: str, *, destination: str, status: int | None = None,
                 accepted: tuple[str, ...] = ()) -> None:
        """``status`` is the SMSC's command_status, if it answered."""
        super().__init__(message, command_status=status)
        self.destination = destination
        self.status = status
        self.accepted = accepted

    @property
    def status_name(self) -> str:
        """The SMSC's status by name ("" when it never answered)."""
        return "" if self.status is None else status_name(self.status)


class SubmitTemporaryError(SubmitError):
    """Not taken by the SMSC, for now: safe to submit again later."""


class SubmitPermanentError(SubmitError):
    """Refused by the SMSC: submitting the same again will fail again."""


class SubmitOutcomeUnknownError(SubmitError, TimeoutError):
    """Sent, but no submit_sm_resp: the SMSC may have accepted it.  Do not blindly resend."""


class TransportStopped(SubmitTemporaryError):
    """The transport was stopped (or its queue was full) before the message went out."""


__all__ = ["CommandStatus", "SmppBindRefused", "SmppTransportError", "SubmitError",
           "SubmitOutcomeUnknownError", "SubmitPermanentError", "SubmitTemporaryError",
           "TransportStopped"]
