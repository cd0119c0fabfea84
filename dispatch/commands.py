"""Operator commands, shared by the SSH console (and anything else with a prompt).

A command is a sequence of words (``show services``), a permission, a one-line
summary and an async handler.  Lines are split like a shell (quotes work),
limited in length, and refused if they hold control characters.  Each
capability registers its commands here as it lands (calls, queues, talkgroups,
broadcasts), so the console grows with the daemon — what an Asterisk CLI user
would expect: ``help``, prefixes of the words, tab completion.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from dispatch import audit as audit_query
from dispatch.audit import AuditTrail
from dispatch.auth import GRANTS, Permission, Principal, UserStore
from dispatch.events import DutyLogAdded
from dispatch.models import DutyLogEntry
from dispatch.storage import Database, after_commit

MAX_LINE = 4096
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

Handler = Callable[["Invocation"], Awaitable[str]]


class CommandError(Exception):
    """A command could not run; the message is for the operator, ``status`` the exit code."""

    def __init__(self, message: str, status: int = 1) -> None:
        """``status`` 2 for a usage mistake, 1 for a refusal or failure."""
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Command:
    """One operator command."""

    words: tuple[str, ...]
    permission: Permission | None
    summary: str
    handler: Handler
    usage: str = ""


@dataclass(frozen=True)
class Invocation:
    """A command being run: who, with which arguments."""

    principal: Principal
    args: tuple[str, ...]


@dataclass(frozen=True)
class ConsoleContext:
    """What the built-in commands need from the daemon."""

    db: Database
    users: UserStore
    audit: AuditTrail
    publish: Callable[[object], object]
    health: Callable[[], dict[str, Any]]
    clock: Callable[[], float]


def split(line: str) -> list[str]:
    """Split a command line into words; ``CommandError`` for bad input."""
    if len(line) > MAX_LINE:
        raise CommandError(f"line longer than {MAX_LINE} characters", 2)
    if _CONTROL.search(line):
        raise CommandError("control characters are not allowed", 2)
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise CommandError(f"cannot parse the line: {exc}", 2) from None


class Commands:
    """The command table and its interpreter."""

    def __init__(self) -> None:
        """An empty table; see :func:`builtin_commands`."""
        self._commands: list[Command] = []

    def add(self, command: Command) -> None:
        """Register a command (its words must be new)."""
        if any(c.words == command.words for c in self._commands):
            raise ValueError(f"command {' '.join(command.words)!r} registered twice")
        self._commands.append(command)

    def allowed(self, principal: Principal) -> list[Command]:
        """The commands ``principal`` may run, in table order."""
        return [c for c in self._commands
                if c.permission is None or principal.can(c.permission)]

    def find(self, words: Sequence[str]) -> tuple[Command, tuple[str, ...]]:
        """The command the words name (each word may be a unique prefix) and its arguments."""
        best: tuple[Command, tuple[str, ...]] | None = None
        for command in self._commands:
            n = len(command.words)
            if len(words) < n or (best is not None and n <= len(best[0].words)):
                continue
            if all(_matches(w, cw, self._siblings(command.words[:i]))
                   for i, (w, cw) in enumerate(zip(words, command.words, strict=False))):
                best = (command, tuple(words[n:]))
        if best is None:
            raise CommandError(f"unknown command {' '.join(words)!r}: type help", 2)
        return best

    def _siblings(self, prefix: tuple[str, ...]) -> set[str]:
        n = len(prefix)
        return {c.words[n] for c in self._commands if len(c.words) > n and c.words[:n] == prefix}

    async def run(self, line: str, principal: Principal) -> str:
        """Run one command line as ``principal``; returns its output."""
        words = split(line)
        if not words:
            return ""
        command, args = self.find(words)
        if command.permission is not None and not principal.can(command.permission):
            raise CommandError(f"role {principal.role.value} may not {command.permission.value}")
        return await command.handler(Invocation(principal, args))

    def complete(self, line: str, principal: Principal) -> list[str]:
        """Completions of the last (partial) word of ``line``, for the tab key."""
        words = line.split(" ")
        done, partial = tuple(words[:-1]), words[-1]
        out = set()
        for command in self.allowed(principal):
            if len(command.words) > len(done) and all(
                    cw.startswith(w) for w, cw in zip(done, command.words, strict=False)):
                candidate = command.words[len(done)]
                if candidate.startswith(partial):
                    out.add(candidate)
        return sorted(out)

    def help(self, principal: Principal) -> str:
        """The help text: every command this principal may run."""
        rows = [(" ".join(c.words) + (f" {c.usage}" if c.usage else ""), c.summary)
                for c in self.allowed(principal)]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"  {name:<{width}}  {summary}" for name, summary in rows)


def _matches(word: str, command_word: str, siblings: set[str]) -> bool:
    if word == command_word:
        return True
    hits = [s for s in siblings if s.startswith(word)]
    return hits == [command_word]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def _limit(args: tuple[str, ...], default: int = 20) -> int:
    if not args:
        return default
    if not args[0].isdigit() or not 1 <= int(args[0]) <= 1000:
        raise CommandError("the count must be a number from 1 to 1000", 2)
    return int(args[0])


def _when(value: dt.datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def builtin_commands(ctx: ConsoleContext) -> Commands:
    """The commands of the foundation: help, whoami, services, audit, duty log, users."""
    table = Commands()

    async def whoami(inv: Invocation) -> str:
        perms = ", ".join(sorted(p.value for p in GRANTS[inv.principal.role]))
        return f"{inv.principal.name} ({inv.principal.role.value}): {perms}"

    async def services(inv: Invocation) -> str:
        health = ctx.health()
        rows = [[name, s["state"], "yes" if s["required"] else "no", s["last_error"] or ""]
                for name, s in health["services"].items()]
        state = "ready" if health["ready"] else "NOT READY"
        return f"{state}\n" + _table(rows, ["SERVICE", "STATE", "REQUIRED", "LAST ERROR"])

    async def show_health(inv: Invocation) -> str:
        return json.dumps(ctx.health(), indent=2, default=str)

    async def audit(inv: Invocation) -> str:
        async with ctx.db.session() as s:
            rows = await audit_query.query(s, limit=_limit(inv.args))
        return _table([[str(r.id), _when(r.at), r.actor, r.action, r.subject,
                         json.dumps(r.details, ensure_ascii=False)] for r in rows],
                      ["ID", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAILS"])

    async def duty_list(inv: Invocation) -> str:
        async with ctx.db.session() as s:
            rows = await s.scalars(select(DutyLogEntry).order_by(DutyLogEntry.id.desc())
                                   .limit(_limit(inv.args)))
            return "\n".join(f"{_when(r.at)}  {r.author}: {r.text}" for r in rows) or "(empty)"

    async def duty_add(inv: Invocation) -> str:
        text = " ".join(inv.args).strip()
        if not text or len(text) > 4000:
            raise CommandError("usage: duty-log add TEXT (1 to 4000 characters)", 2)
        async with ctx.db.session() as s:
            row = DutyLogEntry(at=dt.datetime.fromtimestamp(ctx.clock(), dt.UTC),
                               author=inv.principal.name, text=text)
            s.add(row)
            await s.flush()
            ctx.audit.record(s, actor=inv.principal.name, action="duty_log.written",
                             subject=f"duty_log:{row.id}", details={"chars": len(text),
                                                                     "via": "ssh"})
            event = DutyLogAdded(id=row.id, at=row.at, author=row.author, text=row.text)
            after_commit(s, lambda: ctx.publish(event))
        return f"duty log entry {row.id} added"

    async def users(inv: Invocation) -> str:
        return _table([[u.name, u.role, "disabled" if u.disabled else "", u.display_name]
                       for u in await ctx.users.all_users()], ["NAME", "ROLE", "", "DISPLAY NAME"])

    async def help_(inv: Invocation) -> str:
        return "Commands (words may be abbreviated: 'sh serv'):\n" + table.help(inv.principal)

    for command in (
        Command(("help",), None, "this list", help_),
        Command(("whoami",), None, "your user, role and permissions", whoami),
        Command(("show", "services"), None, "each service's state and last error", services),
        Command(("show", "health"), None, "the /health document", show_health),
        Command(("show", "audit"), Permission.AUDIT_READ, "the newest audit rows", audit, "[N]"),
        Command(("show", "users"), Permission.USERS_READ, "users and roles", users),
        Command(("duty-log", "list"), Permission.DUTY_LOG_READ, "the newest duty-log entries",
                duty_list, "[N]"),
        Command(("duty-log", "add"), Permission.DUTY_LOG_WRITE, "write in the duty log",
                duty_add, "TEXT"),
    ):
        table.add(command)
    return table
