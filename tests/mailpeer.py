"""A real SMTP server (aiosmtpd) on the test loop: plain, STARTTLS or implicit TLS, with login.

It keeps every message it accepts in a queue, and can refuse the first N messages with a
temporary ``451`` (a relay that is briefly unwell) to exercise retries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import warnings
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session,  # noqa: N802
                          envelope: Envelope) -> str:
        if self.sink.refuse_next > 0:
            self.sink.refuse_next -= 1
            self.sink.refused += 1
            return "451 4.3.0 try again later"
        raw = envelope.original_content or envelope.content or b""
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.sink.messages.put_nowait(message)
        self.sink.auth_users.append(getattr(session, "auth_data", None))
        return "250 2.0.0 queued"


class MailSink:
    """An SMTP server on 127.0.0.1, port 0."""

    def __init__(self, security: str = "none", cert: tuple[Path, Path] | None = None,
                 login: tuple[str, str] | None = None) -> None:
        self.security = security
        self.cert = cert
        self.login = login
        self.messages: asyncio.Queue[EmailMessage] = asyncio.Queue()
        self.refuse_next = 0
        self.refused = 0
        self.auth_users: list[Any] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and self.login is not None
              and (data.login.decode(), data.password.decode()) == self.login)
        return AuthResult(success=ok, handled=False)

    async def start(self) -> MailSink:
        context = None
        if self.cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        handler = _Handler(self)

        def protocol() -> SMTP:
            with warnings.catch_warnings():
                # aiosmtpd warns that AUTH without STARTTLS is unsafe: here TLS is implicit.
                warnings.simplefilter("ignore", UserWarning)
                return self._smtp(handler, context)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, "127.0.0.1", 0, ssl=context if self.security == "tls" else None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _smtp(self, handler: _Handler, context: ssl.SSLContext | None) -> SMTP:
        return SMTP(handler, enable_SMTPUTF8=True, hostname="mail.test",
                    tls_context=context if self.security == "starttls" else None,
                    require_starttls=self.security == "starttls",
                    auth_required=self.login is not None,
                    # Implicit TLS is invisible to aiosmtpd: only STARTTLS counts.
                    auth_require_tls=self.security == "starttls",
                    authenticator=self._authenticate if self.login else None)

    async def next(self, timeout: float = 10.0) -> EmailMessage:
        """The next accepted message (waits for it, bounded)."""
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
