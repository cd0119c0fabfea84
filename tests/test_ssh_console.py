"""The SSH console with a real OpenSSH client (keys) and asyncssh as a second client (passwords)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from sqlalchemy import select

from dispatch.audit import query
from dispatch.auth import Role
from dispatch.models import DutyLogEntry

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def make_key(tmp_path: Path, name: str) -> Path:
    """An Ed25519 key pair made by OpenSSH's own ssh-keygen."""
    key = tmp_path / name
    proc = await asyncio.create_subprocess_exec(
        "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key),
        stdout=asyncio.subprocess.DEVNULL)
    assert await proc.wait() == 0
    return key


async def register(daemon: Any, name: str, role: Role, key: Path) -> None:
    await daemon.users.add_user(name, role, f"{name}-password", actor="test")
    public = asyncssh.read_public_key(str(key) + ".pub")
    await daemon.users.add_key(name, public.export_public_key().decode().strip(),
                               public.get_fingerprint("sha256"), actor="test")


async def ssh(daemon: Any, key: Path, user: str, *command: str, stdin: bytes | None = None,
              tty: bool = False) -> tuple[int, str, str]:
    """Run OpenSSH's client against the console; returns (status, stdout, stderr)."""
    port = daemon.ssh.bound[1]
    args = ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-o", "IdentitiesOnly=yes"]
    if tty:
        args.append("-tt")
    proc = await asyncio.create_subprocess_exec(
        *args, f"{user}@127.0.0.1", *command, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(autouse=True)
def need_openssh() -> None:
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        raise RuntimeError("OpenSSH client is missing: run scripts/test, which installs it")


async def test_commands_over_openssh(daemon: Any, tmp_path: Path) -> None:
    key = await make_key(tmp_path, "lead")
    await register(daemon, "lead", Role.SUPERVISOR, key)

    status, out, _ = await ssh(daemon, key, "lead", "show", "services")
    assert status == 0
    assert out.splitlines()[0] == "ready"
    assert any(line.split()[:2] == ["database", "running"] for line in out.splitlines())

    status, out, _ = await ssh(daemon, key, "lead", "duty-log", "add", "'22:10 转发台风预警'")
    assert status == 0 and out.startswith("duty log entry ")
    async with daemon.db.session() as s:
        texts = list(await s.scalars(select(DutyLogEntry.text)))
        audit = await query(s, action="duty_log.written")
    assert texts == ["22:10 转发台风预警"] and audit[0].details == {"chars": 12, "via": "ssh"}

    status, out, _ = await ssh(daemon, key, "lead", "sh", "aud", "5")  # abbreviated words
    assert status == 0 and "duty_log.written" in out and "auth.login" not in out.split("\n")[0]

    status, _, err = await ssh(daemon, key, "lead", "reboot", "everything")
    assert status == 2 and "unknown command 'reboot everything'" in err
    status, _, err = await ssh(daemon, key, "lead", "show", "audit", "many")
    assert status == 2 and "count must be a number" in err


async def test_roles_are_checked(daemon: Any, tmp_path: Path) -> None:
    key = await make_key(tmp_path, "taker")
    await register(daemon, "taker", Role.CALL_TAKER, key)
    status, _, err = await ssh(daemon, key, "taker", "show", "audit")
    assert status == 1 and "role call_taker may not audit.read" in err
    status, out, _ = await ssh(daemon, key, "taker", "help")
    assert status == 0 and "duty-log add" in out and "show audit" not in out


async def test_unknown_key_or_user_is_refused(daemon: Any, tmp_path: Path) -> None:
    stranger = await make_key(tmp_path, "stranger")
    known = await make_key(tmp_path, "known")
    await register(daemon, "known", Role.DISPATCHER, known)
    status, _, err = await ssh(daemon, stranger, "known", "whoami")
    assert status == 255 and "Permission denied" in err
    status, _, err = await ssh(daemon, known, "nobody", "whoami")
    assert status == 255 and "Permission denied" in err
    await daemon.users.update("known", actor="test", disabled=True)
    status, _, _ = await ssh(daemon, known, "known", "whoami")
    assert status == 255


async def test_interactive_session_with_tab_completion(daemon: Any, tmp_path: Path) -> None:
    key = await make_key(tmp_path, "disp")
    await register(daemon, "disp", Role.DISPATCHER, key)
    proc = await asyncio.create_subprocess_exec(
        "ssh", "-tt", "-i", str(key), "-p", str(daemon.ssh.bound[1]), "-o",
        "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "disp@127.0.0.1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        # A person at a terminal has a TERM; CI (and tox) may not pass one on.
        env={**os.environ, "TERM": "xterm"})
    assert proc.stdin is not None and proc.stdout is not None

    async def screen_after(keys: bytes) -> str:
        """Type keys (as a person would, after the prompt) and read up to the next prompt."""
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(keys)
        await proc.stdin.drain()
        text = await asyncio.wait_for(proc.stdout.readuntil(b"dispatchd> "), 15)
        return text.decode()

    banner = await screen_after(b"")
    assert "dispatchd console - disp (dispatcher)" in banner
    shown = await screen_after(b"sh\tser\t\r")
    assert "show services" in shown, "tab completed both words"
    assert "SERVICE" in shown and "database" in shown
    assert "disp (dispatcher): " in await screen_after(b"whoami\r")
    proc.stdin.write(b"quit\r")
    await proc.stdin.drain()
    assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_password_login_and_lockout(daemon: Any) -> None:
    await daemon.users.add_user("op", Role.COMMANDER, "op-password", actor="test")
    port = daemon.ssh.bound[1]

    async def attempt(password: str) -> str:
        async with asyncssh.connect("127.0.0.1", port, username="op", password=password,
                                    known_hosts=None, client_keys=None) as conn:
            result = await conn.run("whoami", check=False)
            return str(result.stdout)

    assert (await attempt("op-password")).startswith("op (commander)")
    for _ in range(3):  # the daemon fixture locks after 3 failures
        with pytest.raises(asyncssh.PermissionDenied):
            await attempt("wrong")
    with pytest.raises(asyncssh.PermissionDenied):
        await attempt("op-password")
    async with daemon.db.session() as s:
        rows = [r for r in await query(s, subject="user:op") if r.action.startswith("auth.")]
    assert [r.action for r in rows] == ["auth.login_failed"] * 4 + ["auth.login"]
    assert {r.details["via"] for r in rows} == {"ssh"}


async def test_incident_and_broadcast_commands(daemon: Any, tmp_path: Path) -> None:
    import datetime as dt

    from dispatch.campaigns import RecipientIn
    from dispatch.reports import NewReport
    from intake.model import Channel

    lead, chief = await make_key(tmp_path, "lead"), await make_key(tmp_path, "chief")
    await register(daemon, "lead", Role.SUPERVISOR, lead)
    await register(daemon, "chief", Role.COMMANDER, chief)
    placed = await daemon.reports.submit(NewReport(
        Channel.SMS, "长安镇化工厂爆炸起火，十二人死亡", dt.datetime.now(dt.UTC),
        caller="+8613800000000", lat=22.81, lon=113.81), actor="sms")
    short = placed.incident_id[:8]

    status, out, _ = await ssh(daemon, lead, "lead", "show", "incidents")
    assert status == 0
    row = next(line.split() for line in out.splitlines() if line.startswith(short))
    assert row[1:3] == ["II", "new"] and row[3] == "accident"
    status, out, _ = await ssh(daemon, lead, "lead", "show", "incident", short)
    assert status == 0 and "grade reasons: most severe of 1 report" in out
    assert "+8613800000000" in out and "22.81000,113.81000" in out
    status, _, err = await ssh(daemon, lead, "lead", "show", "incident", "zzzz")
    assert status == 2 and "hexadecimal" in err

    cid = await daemon.campaigns.create(
        "长安镇疏散", [RecipientIn("+8613900000001", "zh", "请立即撤离")], actor="lead")
    status, out, _ = await ssh(daemon, lead, "lead", "show", "broadcasts")
    assert status == 0 and cid[:8] in out and "pending_approval" in out
    # The creator may not approve (two-person rule), and a supervisor has no approve command.
    status, _, err = await ssh(daemon, lead, "lead", "broadcast", "approve", cid[:8])
    assert status == 1 and "may not broadcast.approve" in err
    status, out, _ = await ssh(daemon, chief, "chief", "broadcast", "approve", cid[:8])
    assert status == 0 and "approved" in out, out
    status, out, _ = await ssh(daemon, chief, "chief", "show", "broadcast", cid[:6])
    assert status == 0 and "approved by chief" in out
    async with daemon.db.session() as s:
        rows = await query(s, action="campaign.approved")
    assert [r.actor for r in rows] == ["chief"]
