"""Shared helpers for the transport/registrar tests: messages, digest, peers."""

from __future__ import annotations

import asyncio
import shutil
import socket
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from telephony.registrar import (
    MemoryBindingStore,
    MemoryCredentialStore,
    Registrar,
    RegistrarEvent,
    RegistrarSettings,
)
from telephony.sip.digest import DigestClient, select_challenge
from telephony.sip.message import SipRequest, SipResponse, make_via, new_branch, parse_message

REALM = "dispatch.test"
SECRET = b"0123456789abcdef0123456789abcdef"
E = TypeVar("E")
PASSWORDS = {"alice": "secret1", "bob": "hunter2-long"}


def register_text(
    user: str = "alice",
    *,
    host: str = "127.0.0.1",
    port: int = 5060,
    ruri: str | None = None,
    contact: str | None = "<sip:alice@192.168.1.20:5062>",
    expires: int | None = None,
    call_id: str = "reg-1",
    cseq: int = 1,
    transport: str = "UDP",
    authorization: str | None = None,
    branch: str | None = None,
) -> str:
    """A REGISTER as text (so tests also exercise the parser)."""
    lines = [
        f"REGISTER {ruri or f'sip:{host}'} SIP/2.0",
        f"Via: {make_via(transport, '192.168.1.20', 5062, branch or new_branch())}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{REALM}>;tag=f{cseq}",
        f"To: <sip:{user}@{REALM}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"


def register(**kwargs: object) -> SipRequest:
    """A parsed REGISTER (see :func:`register_text`)."""
    message = parse_message(register_text(**kwargs).encode())  # type: ignore[arg-type]
    assert isinstance(message, SipRequest)
    return message


def authorize(challenge_response: SipResponse, user: str, password: str, uri: str,
              algorithm: str | None = None) -> str:
    """The Authorization value answering a 401."""
    values = challenge_response.headers.get_all("WWW-Authenticate")
    if algorithm is not None:
        values = [v for v in values if f"algorithm={algorithm}," in v]
    challenge = select_challenge(values)
    return DigestClient(user, password).authorize(challenge, "REGISTER", uri).to_header()


@dataclass
class Clock:
    """A stepped wall clock for the registrar."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """Collects registrar events."""

    events: list[RegistrarEvent] = field(default_factory=list)

    def __call__(self, event: RegistrarEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        """Events of one class."""
        return [e for e in self.events if isinstance(e, kind)]


def make_registrar(clock: Clock | None = None, **overrides: object) -> tuple[Registrar, Recorder]:
    """A registrar over memory stores holding :data:`PASSWORDS`."""
    settings = RegistrarSettings(realm=REALM, **overrides)  # type: ignore[arg-type]
    recorder = Recorder()
    registrar = Registrar(
        settings, SECRET, MemoryBindingStore(),
        MemoryCredentialStore.from_passwords(REALM, PASSWORDS),
        on_event=recorder, clock=clock or Clock(),
    )
    return registrar, recorder


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port that was free a moment ago (for peers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(binary: str) -> str:
    """Path of a peer binary, or fail saying who installs it (never skip)."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed; scripts/test installs it "
                    "(apt-get install sip-tester sipsak sipvicious)")
    return path


async def run_peer(*argv: str, timeout: float = 60.0, cwd: str | None = None) -> tuple[int, str]:
    """Run a peer to completion (bounded in time); return (exit code, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL, cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -9, out.decode("utf-8", "replace")
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")
