"""The SSH console (asyncssh): the operator commands over SSH.

Operators and administrators log in with their dispatchd user name and either
their password (same lock-out rules as the web console) or an SSH key
registered with ``dispatchd user key``.  An interactive session has line
editing, history and tab completion; ``ssh host -p 2222 show services`` runs
one command and exits with its status (0 ok, 1 refused or failed, 2 usage).
Every log-in is audited, and so is every command that changes something.

The host key is generated on first start in ``node.data_dir`` unless
``ssh.host_key`` names one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, cast

import asyncssh

from dispatch.auth import AuthError, Principal, UserStore
from dispatch.commands import CommandError, Commands

log = logging.getLogger(__name__)

PROMPT = "dispatchd> "
MAX_COMMAND_OUTPUT = 1_000_000


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key; an Ed25519 key is created (mode 0600) if missing."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    log.info("ssh host key created", extra={"path": str(path)})
    return key


class _Server(asyncssh.SSHServer):
    """Authentication against the users table."""

    def __init__(self, console: SshConsole) -> None:
        self.console = console
        self.peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        try:
            await self.console.users.check_password(username, password, source=self.peer,
                                                    via="ssh")
        except AuthError:
            return False
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        offered = key.export_public_key("openssh").split()[:2]
        for stored in await self.console.users.keys(username):
            try:
                known = asyncssh.import_public_key(stored).export_public_key("openssh").split()
            except (asyncssh.KeyImportError, ValueError):
                continue
            if known[:2] == offered:
                return True
        return False


class SshConsole:
    """An optional service: the SSH console listener."""

    name = "ssh"

    def __init__(self, commands: Commands, users: UserStore, *, host: str, port: int,
                 host_key: Path, idle_timeout_s: int, max_sessions: int) -> None:
        """Describe the listener; nothing is bound until :meth:`start`."""
        self.commands = commands
        self.users = users
        self.host = host
        self.port = port
        self.host_key = host_key
        self.idle_timeout_s = idle_timeout_s
        self.max_sessions = max_sessions
        self.sessions = 0
        self._server: asyncssh.SSHAcceptor | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        """Load the host key and listen."""
        key = load_or_create_host_key(self.host_key)
        self._server = await asyncssh.create_server(
            lambda: _Server(self), self.host, self.port, server_host_keys=[key],
            process_factory=self._session, line_editor=True, line_history=200,
            login_timeout=30, keepalive_interval=60, encoding="utf-8",
            allow_scp=False, agent_forwarding=False, x11_forwarding=False,
        )
        sock = self._server.sockets[0]
        self.bound = sock.getsockname()[:2]
        log.info("ssh listening", extra={"host": self.bound[0], "port": self.bound[1]})

    async def stop(self) -> None:
        """Close the listener and every session."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def health(self) -> dict[str, Any]:
        """Where we listen and how many sessions are open."""
        listen = f"{self.bound[0]}:{self.bound[1]}" if self.bound else None
        return {"listen": listen, "sessions": self.sessions}

    async def _session(self, process: asyncssh.SSHServerProcess[str]) -> None:
        name = process.get_extra_info("username")
        principal = await self.users.principal(name)
        if principal is None or self.sessions >= self.max_sessions:
            process.stderr.write("dispatchd: session refused\n")
            process.exit(1)
            return
        self.sessions += 1
        try:
            if process.command:
                status = await self._one(process, process.command, principal)
                process.exit(status)
            else:
                await self._interactive(process, principal)
                process.exit(0)
        except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged, BrokenPipeError,
                ConnectionError):
            process.exit(0)
        finally:
            self.sessions -= 1

    async def _one(self, process: asyncssh.SSHServerProcess[str], line: str,
                   principal: Principal) -> int:
        try:
            output = await self.commands.run(line, principal)
        except CommandError as exc:
            process.stderr.write(f"{exc}\n")
            return exc.status
        except Exception:
            log.exception("console command failed (a bug)", extra={"line": line[:200]})
            process.stderr.write("internal error: see the daemon's log\n")
            return 1
        if output:
            # With a terminal, asyncssh's line editor turns \n into \r\n itself.
            process.stdout.write(output[:MAX_COMMAND_OUTPUT] + "\n")
        return 0

    async def _interactive(self, process: asyncssh.SSHServerProcess[str],
                           principal: Principal) -> None:
        if process.get_terminal_type():
            # A terminal session's channel is asyncssh's line-editor channel.
            cast(Any, process.channel).register_key("\t", self._completer(principal))
        process.stdout.write(f"dispatchd console - {principal.name} ({principal.role.value}). "
                             "Type help, or quit.\n")
        while True:
            process.stdout.write(PROMPT)
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    line = await process.stdin.readline()
            except TimeoutError:
                process.stdout.write("\nidle too long, bye\n")
                return
            except asyncssh.TerminalSizeChanged:
                continue
            if not line:
                return
            line = line.strip()
            if line in ("quit", "exit", "logout"):
                return
            await self._one(process, line, principal)

    def _completer(self, principal: Principal) -> Any:
        def complete(line: str, pos: int) -> bool | tuple[str, int]:
            head, tail = line[:pos], line[pos:]
            options = self.commands.complete(head, principal)
            if len(options) != 1:
                return False  # ring the bell: none or ambiguous
            words = head.split(" ")
            words[-1] = options[0]
            completed = " ".join(words) + " "
            return completed + tail, len(completed)

        return complete
