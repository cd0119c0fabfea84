"""Reports by email: an SMTP listener (aiosmtpd) on the daemon's loop.

A mail gateway (or a partner agency's system) delivers to
``report@<centre>``; each message becomes a report whose text is the subject
and the plain-text body, whose caller is the sender, and whose ``source_ref``
is the Message-ID, so a re-delivered message lands on the same report.  The
SMTP ``250`` is sent only after the report is stored; a storage failure gets
a ``451`` so the sending server keeps the message and tries again — nothing
is lost in between.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import logging
import re
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from dispatch.reports import NewReport, ReportService
from intake.model import Channel

log = logging.getLogger(__name__)

MAX_TEXT = 8000
_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"[ \t\r\f\v]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def message_text(message: EmailMessage) -> str:
    """Subject and plain-text body (HTML stripped if that is all there is), bounded."""
    part = message.get_body(preferencelist=("plain", "html"))
    body = ""
    if part is not None:
        try:
            body = str(part.get_content())
        except (LookupError, ValueError):  # unknown charset or broken encoding
            body = part.get_payload(decode=True).decode("utf-8", "replace")  # type: ignore[union-attr]
        if part.get_content_subtype() == "html":
            body = _TAGS.sub(" ", body)
    subject = str(message.get("subject", "")).strip()
    text = f"{subject}\n{body}".strip() if subject else body.strip()
    text = _CONTROL.sub(" ", _SPACE.sub(" ", text))
    return text[:MAX_TEXT]


class _Handler:
    """aiosmtpd's handler: store a report per message, then accept it."""

    def __init__(self, reports: ReportService, recipients: frozenset[str]) -> None:
        self.reports = reports
        self.recipients = recipients

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,  # noqa: N802
                          address: str, options: list[str]) -> str:
        if self.recipients and address.lower() not in self.recipients:
            return "550 5.1.1 not a report address here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session,  # noqa: N802
                          envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        message = email.message_from_bytes(bytes(raw) if not isinstance(raw, str)
                                           else raw.encode(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        text = message_text(message)
        if not text:
            return "554 5.6.0 empty report: no subject or text"
        message_id = str(message.get("message-id", "")).strip()[:160] or None
        sender = str(envelope.mail_from or "")[:64]
        new = NewReport(Channel.EMAIL, text, dt.datetime.now(dt.UTC), caller=sender,
                        source_ref=message_id)
        try:
            done = await self.reports.submit(new, actor=f"email:{sender}"[:64])
        except Exception:
            log.exception("email report could not be stored", extra={"sender": sender})
            return "451 4.3.0 could not store the report, try again later"
        return f"250 2.0.0 report {done.report_id} stored"


class EmailIntake:
    """An optional service: the SMTP listener for emailed reports."""

    name = "email"

    def __init__(self, reports: ReportService, *, host: str, port: int,
                 max_message_bytes: int, recipients: tuple[str, ...]) -> None:
        """Describe the listener; nothing is bound until :meth:`start`."""
        self.reports = reports
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.recipients = frozenset(r.lower() for r in recipients)
        self._server: asyncio.AbstractServer | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        """Listen for SMTP on the daemon's loop."""
        handler = _Handler(self.reports, self.recipients)
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            return SMTP(handler, data_size_limit=self.max_message_bytes, enable_SMTPUTF8=True,
                        hostname="dispatchd", ident="dispatchd report intake", loop=loop)

        self._server = await loop.create_server(protocol, self.host, self.port)
        self.bound = self._server.sockets[0].getsockname()[:2]
        log.info("email intake listening", extra={"host": self.bound[0], "port": self.bound[1]})

    async def stop(self) -> None:
        """Stop accepting mail."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def health(self) -> dict[str, Any]:
        """Where we listen."""
        return {"listen": f"{self.bound[0]}:{self.bound[1]}" if self.bound else None}
