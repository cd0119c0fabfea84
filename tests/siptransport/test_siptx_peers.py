"""Real SIP peers against the endpoint and registrar: SIPp, sipsak, sipvicious.

The peers run as subprocesses on the test's own event loop (the server is on
it too), bounded in number and time.  A missing binary fails the test with a
message naming ``scripts/test``; nothing is skipped.
"""

from __future__ import annotations

import csv
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from siptx_helpers import PASSWORDS, Recorder, free_port, make_registrar, need, run_peer

from telephony.registrar import AuthFailed, Registrar, SourceBlocked
from telephony.sip.events import DeliverRequest
from telephony.sip.message import build_response
from telephony.sip.transport import (
    ListenAddress,
    MethodRouter,
    NullTransactionUser,
    SipEndpoint,
    TransportSettings,
)

SIPP_DIR = Path(__file__).parent / "sipp"
EXTENSIONS = ["alice", "bob", "100", "101", "200", "1000", "admin", "operator", "test"]


@dataclass
class Server:
    endpoint: SipEndpoint
    registrar: Registrar
    events: Recorder

    def port(self, transport: str = "UDP") -> int:
        return self.endpoint.address(transport).port


async def serve(**overrides: object) -> Server:
    endpoint = SipEndpoint(TransportSettings(listen=(
        ListenAddress("UDP", "127.0.0.1", 0), ListenAddress("TCP", "127.0.0.1", 0))))
    registrar, events = make_registrar(time.time, **overrides)  # type: ignore[arg-type]
    router = MethodRouter(endpoint)
    router.route("REGISTER", registrar)
    endpoint.user = router
    registrar.attach(endpoint)
    await endpoint.start()
    await registrar.start()
    return Server(endpoint, registrar, events)


@pytest_asyncio.fixture(loop_scope="session")
async def server_factory() -> AsyncIterator[Callable[..., object]]:
    started: list[Server] = []

    async def factory(**overrides: object) -> Server:
        server = await serve(**overrides)
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.endpoint.stop()
        await server.registrar.stop()


async def test_sipsak_options(server_factory: Callable[..., object]) -> None:
    server: Server = await server_factory()  # type: ignore[misc]
    code, out = await run_peer(
        need("sipsak"), "-H", "127.0.0.1", "-l", str(free_port()),
        "-s", f"sip:127.0.0.1:{server.port()}", "-v", timeout=30)
    assert code == 0, out
    assert "SIP/2.0 200 OK" in out and "Allow: " in out


def sipp_stats(path: Path) -> dict[str, int]:
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    return {k: int(last[header.index(k)])
            for k in ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)")}


def users_csv(tmp: Path, users: dict[str, str]) -> Path:
    path = tmp / "users.csv"
    lines = ["SEQUENTIAL"] + [
        f"{u};[authentication username={u} password={p}]" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_sipp_digest_register(
    server_factory: Callable[..., object], tmp_path: Path, transport: str
) -> None:
    server: Server = await server_factory(rate=1000.0, burst=1000.0)  # type: ignore[misc]
    calls = 20
    mode = ["-t", "u1"] if transport == "UDP" else ["-t", "t1"]
    code, out = await run_peer(
        need("sipp"), f"127.0.0.1:{server.port(transport)}", "-sf",
        str(SIPP_DIR / "register_digest.xml"), "-inf", str(users_csv(tmp_path, PASSWORDS)),
        "-i", "127.0.0.1", "-p", str(free_port()), *mode, "-m", str(calls), "-r", "20",
        "-nostdin", "-trace_err", "-trace_stat", "-stf", str(tmp_path / "stat.csv"),
        timeout=60, cwd=str(tmp_path))
    assert code == 0, out + "".join(p.read_text() for p in tmp_path.glob("*errors.log"))
    assert sipp_stats(tmp_path / "stat.csv")["SuccessfulCall(C)"] == calls
    for user in PASSWORDS:
        bindings = await server.registrar.lookup(f"sip:{user}@dispatch.test", time.time())
        assert bindings and all(b.source_transport == transport for b in bindings)
        assert all(b.user_agent == "SIPp" for b in bindings)
    assert server.events.of(AuthFailed) == []


async def test_sipp_wrong_password_never_registers(
    server_factory: Callable[..., object], tmp_path: Path
) -> None:
    server: Server = await server_factory(rate=1000.0, burst=1000.0, max_failures=1000)  # type: ignore[misc]
    code, _ = await run_peer(
        need("sipp"), f"127.0.0.1:{server.port()}", "-sf", str(SIPP_DIR / "register_digest.xml"),
        "-inf", str(users_csv(tmp_path, {"alice": "wrong", "nosuchuser": "x"})),
        "-i", "127.0.0.1", "-p", str(free_port()), "-m", "4", "-r", "10", "-nostdin",
        "-trace_stat", "-stf", str(tmp_path / "stat.csv"), "-recv_timeout", "3000",
        timeout=60, cwd=str(tmp_path))
    assert code != 0
    assert sipp_stats(tmp_path / "stat.csv")["SuccessfulCall(C)"] == 0
    assert await server.registrar.bindings.count() == 0
    assert len(server.events.of(AuthFailed)) == 4


class NaiveRegistrar(NullTransactionUser):
    """The counter-example: 404 for unknown users, 401 for known ones."""

    def on_request(self, event: DeliverRequest) -> None:
        assert self.endpoint is not None and event.key is not None
        user = event.request.to.sip_uri.user or ""
        status = 401 if user in PASSWORDS else 404
        extra = [("WWW-Authenticate", 'Digest realm="x", nonce="n", qop="auth"')] if status == 401 else []
        self.endpoint.send_response(build_response(event.request, status, extra_headers=extra))


async def svwar(port: int, tmp: Path) -> str:
    exts = tmp / "exts.txt"
    exts.write_text("\n".join(EXTENSIONS) + "\n")
    code, out = await run_peer(
        need("svwar"), "--force", "-m", "REGISTER", "-d", str(exts), "-p", str(port),
        "-P", str(free_port()), "127.0.0.1", timeout=60, cwd=str(tmp))
    assert code == 0, out
    return out


async def test_svwar_finds_no_extension(server_factory: Callable[..., object], tmp_path: Path) -> None:
    server: Server = await server_factory()  # type: ignore[misc]
    out = await svwar(server.port(), tmp_path)
    assert "found nothing" in out
    assert "| alice" not in out and "| bob" not in out


async def test_svwar_would_find_users_on_a_naive_registrar(
    server_factory: Callable[..., object], tmp_path: Path
) -> None:
    """The control: the same scan does enumerate a registrar that answers 404."""
    server: Server = await server_factory()  # type: ignore[misc]
    naive = NaiveRegistrar()
    naive.endpoint = server.endpoint
    router = MethodRouter(server.endpoint)
    router.route("REGISTER", naive)
    server.endpoint.user = router
    out = await svwar(server.port(), tmp_path)
    assert "| alice     | reqauth" in out and "| bob       | reqauth" in out
    assert "| 100" not in out


async def svcrack(port: int, tmp: Path, passwords: list[str]) -> str:
    words = tmp / "pw.txt"
    words.write_text("\n".join(passwords) + "\n")
    code, out = await run_peer(
        need("svcrack"), "-u", "alice", "-d", str(words), "-p", str(port),
        "-P", str(free_port()), "--maximumtime=2", "127.0.0.1", timeout=90, cwd=str(tmp))
    assert code == 0, out
    return out


GUESSES = ["123456", "password", "alice", "qwerty", "letmein", "dispatch", "110119"]


async def test_svcrack_dictionary_without_the_password(
    server_factory: Callable[..., object], tmp_path: Path
) -> None:
    server: Server = await server_factory(max_failures=100)  # type: ignore[misc]
    out = await svcrack(server.port(), tmp_path, GUESSES)
    assert "found nothing" in out and PASSWORDS["alice"] not in out
    assert len(server.events.of(AuthFailed)) == len(GUESSES)


async def test_svcrack_can_crack_when_nothing_stops_it(
    server_factory: Callable[..., object], tmp_path: Path
) -> None:
    """The control: svcrack really answers our qop=auth challenge, so a
    password in its dictionary is found when blocking is out of reach."""
    server: Server = await server_factory(max_failures=100)  # type: ignore[misc]
    out = await svcrack(server.port(), tmp_path, [*GUESSES, PASSWORDS["alice"]])
    assert f"| alice     | {PASSWORDS['alice']}" in out


async def test_svcrack_is_blocked_before_it_reaches_the_password(
    server_factory: Callable[..., object], tmp_path: Path
) -> None:
    server: Server = await server_factory(max_failures=5)  # type: ignore[misc]
    out = await svcrack(server.port(), tmp_path, [*GUESSES, PASSWORDS["alice"]])
    assert "found nothing" in out and PASSWORDS["alice"] not in out
    (blocked,) = server.events.of(SourceBlocked)
    assert blocked.source == "127.0.0.1"
    assert len(server.events.of(AuthFailed)) == 5  # everything after was dropped unseen
    assert server.endpoint.stats.dropped > 0
