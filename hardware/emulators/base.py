"""The part every AT device emulator shares: a pty, command lines, echo, faults.

An emulator opens ``pty.openpty()`` itself, keeps both ends open (so the
master never sees EIO when a client closes the slave) and serves the master
from the asyncio loop's reader.  A client opens :attr:`AtEmulator.slave_path`
exactly as it would open ``/dev/ttyUSB0``.

Subclasses fill :attr:`AtEmulator.handlers` (command name -> method).  A
command line ``AT+CMGS=23`` becomes name ``+CMGS``, op ``=`` and args ``23``;
a basic command ``ATD112;`` becomes name ``D`` and args ``112;``.

Faults (:class:`Faults`) are the catalogue of misbehaving devices from
STYLE habit 10: a silent modem, ``ERROR`` on every Nth command, garbled
answers, a slow answer.  Tests change them at any moment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pty
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CTRL_Z = 0x1A
ESC = 0x1B


@dataclass
class Faults:
    """Ways the emulated device misbehaves; all off by default."""

    silent: bool = False
    error_every: int = 0
    garble_every: int = 0
    delay: float = 0.0


@dataclass(frozen=True)
class Reply:
    """What a handler answers: intermediate lines and the final result code."""

    lines: tuple[str, ...] = ()
    final: str = "OK"
    raw: bytes = b""
    after: tuple[str, ...] = ()  # unsolicited codes that follow the final result


OK = Reply()
ERROR = Reply(final="ERROR")

Handler = Callable[[str, str], Reply | None]
TextHandler = Callable[[str], Reply]


@dataclass
class _Line:
    data: bytearray = field(default_factory=bytearray)
    overflow: bool = False


class AtEmulator:
    """A generic V.250 device on a pty; subclasses add their command sets."""

    #: Shown by ``ATI``.
    identity = "dispatchd emulator"

    def __init__(self, *, echo: bool = True, faults: Faults | None = None,
                 max_line: int = 2048) -> None:
        """Describe the device; nothing is opened until :meth:`open`."""
        self.echo = echo
        self.faults = faults or Faults()
        self.max_line = max_line
        self.commands: list[str] = []
        #: Called with each command line after it is answered (tests await on it).
        self.on_command: Callable[[str], None] | None = None
        self.cmee = 0
        self.handlers: dict[str, Handler] = {
            "": lambda op, args: OK,
            "E": self._cmd_echo,
            "Z": lambda op, args: OK,
            "&F": lambda op, args: OK,
            "I": lambda op, args: Reply((self.identity,)),
            "+CMEE": self._cmd_cmee,
        }
        self._master = -1
        self._slave = -1
        self._slave_path = ""
        self._line = _Line()
        self._text: TextHandler | None = None
        self._text_end = CTRL_Z
        self._text_buf = bytearray()
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.written = bytearray()

    # --- the pty ----------------------------------------------------------------------------

    def open(self) -> str:
        """Create the pty, start serving it on the running loop; return the slave's path."""
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = pty.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self._slave_path = os.ttyname(self._slave)
        self._loop.add_reader(self._master, self._readable)
        return self._slave_path

    @property
    def slave_path(self) -> str:
        """The device path a client opens (``/dev/pts/N``)."""
        return self._slave_path

    def close(self) -> None:
        """Stop serving and close both ends of the pty."""
        if self._master >= 0 and self._loop is not None:
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("emulator pty read failed", extra={"error": str(exc)})
            return
        self.feed(data)

    def write(self, data: bytes) -> None:
        """Send bytes to the client, unless the device is playing dead."""
        if self.faults.silent or self._master < 0:
            return
        self.written += data
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                # The client is not reading; a real UART would drop, so do we.
                log.warning("emulator output dropped: client not reading")
                return
            view = view[n:]

    # --- input ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Handle bytes from the client (the pty reader calls this)."""
        if self.echo and not self.faults.silent:
            self.write(data)
        for byte in data:
            if self._text is not None:
                self._text_byte(byte)
            elif byte == 0x0D:
                line, self._line = self._line, _Line()
                self._command_line(line)
            elif byte == 0x0A:
                continue
            elif len(self._line.data) >= self.max_line:
                self._line.overflow = True
            else:
                self._line.data.append(byte)

    def _text_byte(self, byte: int) -> None:
        if byte == ESC:
            self._text, self._text_buf = None, bytearray()
            return
        if byte != self._text_end:
            if len(self._text_buf) < self.max_line:
                self._text_buf.append(byte)
            return
        handler, self._text = self._text, None
        text = self._text_buf.decode("latin-1").strip("\r\n")
        self._text_buf = bytearray()
        if handler is not None:
            self._answer(handler(text))

    def _command_line(self, line: _Line) -> None:
        text = line.data.decode("latin-1").strip()
        if not text:
            return
        if self.faults.silent:
            self.commands.append(text)
            return
        if line.overflow or text[:2].upper() != "AT":
            self._answer(ERROR)
            return
        self.commands.append(text)
        self._count += 1
        if self.faults.error_every and self._count % self.faults.error_every == 0:
            self._answer(ERROR)
            return
        name, op, args = parse_command(text[2:])
        handler = self.handlers.get(name)
        reply = handler(op, args) if handler is not None else ERROR
        if reply is not None:
            self._answer(reply)
        if self.on_command is not None:
            self.on_command(text)

    def expect_text(self, handler: TextHandler, prompt: bytes = b"\r\n> ",
                    end: int = CTRL_Z) -> None:
        """Switch to text entry (after ``AT+CMGS``): the text up to ``end`` goes to ``handler``."""
        self._text = handler
        self._text_end = end
        self._text_buf = bytearray()
        if prompt:
            self.write(prompt)

    # --- output -----------------------------------------------------------------------------

    def _answer(self, reply: Reply) -> None:
        out = bytearray(reply.raw)
        for line in reply.lines:
            out += b"\r\n" + line.encode("latin-1") + b"\r\n"
        out += b"\r\n" + reply.final.encode("latin-1") + b"\r\n"
        for line in reply.after:
            out += b"\r\n" + line.encode("latin-1") + b"\r\n"
        if self.faults.garble_every and self._count % self.faults.garble_every == 0:
            # Line noise: the answer arrives mangled and without a final result code.
            out = bytearray(b ^ 0x5A for b in out[:-2]) if len(out) > 2 else bytearray(b"\xff")
        if self.faults.delay > 0 and self._loop is not None:
            self._loop.call_later(self.faults.delay, self.write, bytes(out))
        else:
            self.write(bytes(out))

    def unsolicited(self, line: str, *extra: str) -> None:
        """Send an unsolicited result code (and the lines that belong to it)."""
        out = b"\r\n" + line.encode("latin-1") + b"\r\n"
        for more in extra:
            out += more.encode("latin-1") + b"\r\n"
        self.write(out)

    def cme(self, code: int, text: str) -> Reply:
        """``+CME ERROR`` as ``AT+CMEE`` asks: plain ERROR, numeric or verbose."""
        if self.cmee == 1:
            return Reply(final=f"+CME ERROR: {code}")
        if self.cmee == 2:
            return Reply(final=f"+CME ERROR: {text}")
        return ERROR

    # --- common commands --------------------------------------------------------------------

    def _cmd_echo(self, op: str, args: str) -> Reply:
        if args not in ("", "0", "1"):
            return ERROR
        self.echo = args == "1"
        return OK

    def _cmd_cmee(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f"+CMEE: {self.cmee}",))
        if op == "=?":
            return Reply(("+CMEE: (0-2)",))
        if op == "=" and args in ("0", "1", "2"):
            self.cmee = int(args)
            return OK
        return ERROR


def parse_command(body: str) -> tuple[str, str, str]:
    """Split the text after ``AT`` into (name, op, args): ``+CMGS=23`` -> (+CMGS, =, 23)."""
    if not body:
        return "", "", ""
    if body[0] in "+$%^*&":
        if body[0] == "&":
            return body[:2].upper(), "", body[2:]
        end = len(body)
        for stop in "=?":
            i = body.find(stop)
            if i >= 0:
                end = min(end, i)
        name, rest = body[:end].upper(), body[end:]
        if rest.startswith("=?"):
            return name, "=?", rest[2:]
        if rest.startswith("?"):
            return name, "?", rest[1:]
        if rest.startswith("="):
            return name, "=", rest[1:]
        return name, "", rest
    return body[0].upper(), "", body[1:]


def digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``²``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def split_args(args: str) -> list[str]:
    """``1,"SM",3`` -> ``['1', 'SM', '3']`` (quotes removed; no escapes in V.250 strings)."""
    return [a.strip().strip('"') for a in args.split(",")] if args else []
