"""A sans-I/O AT command engine (3GPP TS 27.007 / 27.005, ITU-T V.250, TETRA PEI).

Theory of operation
-------------------
The engine is handed bytes from the device and the time, and hands back
events and bytes to write; it never reads the clock or touches a port
(``hardware.atport`` is the asyncio adapter that does).

* **One command in flight.**  :meth:`AtEngine.send` queues a command and
  returns an integer handle; the head of the queue is written as soon as the
  engine is idle.  The device answers with zero or more *intermediate* lines
  and one *final result code* (``OK``, ``ERROR``, ``+CME ERROR: <n>``,
  ``+CMS ERROR: <n>``, ``NO CARRIER``, ``BUSY``, ``NO ANSWER``,
  ``NO DIALTONE``, ``CONNECT``); that ends the command with
  :class:`CommandCompleted` or :class:`CommandFailed` and writes the next one.
* **Framing.**  Lines end with CR or LF; empty lines are skipped (V.250's
  verbose format wraps every line in CR LF).  A line longer than
  ``AtSettings.max_line`` is reported as :class:`ProtocolError`
  (``LINE_TOO_LONG``) and skipped up to its terminator: a garbled serial line
  costs one line, never the engine.
* **Echo.**  With ``ATE1`` the device repeats the command line (and the text
  after a prompt); the first line equal to the command, and a line equal to
  the payload, are dropped.
* **Prompt.**  ``AT+CMGS=<len>`` (TS 27.005 3.5.1/4.3) answers ``"> "`` with
  no line terminator; on seeing it the engine writes the payload and Ctrl-Z.
  A payload without ``expect_prompt`` (TETRA PEI ``AT+CMGS``, EN 300 392-5
  6.13.2) is written at once after the command, as ``CR LF payload Ctrl-Z``.
* **Unsolicited result codes.**  Lines whose name (the text before ``:``, or
  the whole line) is in ``AtSettings.urcs`` are delivered as
  :class:`Unsolicited` even while a command is in flight, *unless* the name
  is the in-flight command's own response prefix (``+CREG:`` answers
  ``AT+CREG?`` but is unsolicited otherwise).  The table gives how many
  following lines belong to the URC (``+CMT``, ``+CDS``, ``+CTSDSR`` carry
  their payload on the next line).  Call-progress codes (``NO CARRIER``, ...)
  that arrive with nothing in flight are unsolicited too: the remote hung up.
* **Timeouts and resynchronisation.**  Each command has a deadline counted
  from :meth:`AtEngine.send` (the caller's view: "an answer within N
  seconds", queueing included).  A command whose deadline passes while still
  queued ends with :class:`CommandTimedOut` and nothing else happens: it never
  reached the wire.  When the deadline of the command *on the wire* passes,
  it ends with :class:`CommandTimedOut` and the engine is *desynchronised*: a late answer
  could be taken for the next command's.  It writes ``AT`` (after ESC if a
  prompt may be open) every ``resync_interval`` until an ``OK`` arrives, then
  waits ``resync_settle`` more, restarting that wait on every further ``OK``
  (so the late ``OK`` of the timed-out command and the probe's own ``OK``
  are both absorbed), and reports :class:`Resynchronised`.  Queued commands
  are **kept** and sent in order afterwards: they are independent requests,
  and each still has its own deadline, so a device that never comes back
  cannot hold a caller forever; a caller that wants them dropped sooner
  cancels them with :meth:`AtEngine.cancel`.
* **Control characters.**  Commands and payloads are checked before anything
  is written: anything below 0x20 or 0x7f is refused with
  :class:`AtControlCharacter`; Ctrl-Z is the engine's to append.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

CTRL_Z = b"\x1a"
ESC = b"\x1b"

#: URC name -> number of lines that follow it and belong to it.
DEFAULT_URCS: Mapping[str, int] = {
    # TS 27.007: calls and registration
    "RING": 0, "+CRING": 0, "+CLIP": 0, "+CCWA": 0, "+CREG": 0, "+CGREG": 0, "+CEREG": 0,
    "+CIEV": 0, "+CUSD": 0, "+CSSI": 0, "+CSSU": 0, "+CLCC": 0,
    # TS 27.005: messages (+CMT/+CDS/+CBM carry the PDU on the next line)
    "+CMTI": 0, "+CDSI": 0, "+CMT": 1, "+CDS": 1, "+CBM": 1,
    # call progress with no command in flight: the far end hung up
    "NO CARRIER": 0, "BUSY": 0, "NO ANSWER": 0,
    # ETSI EN 300 392-5 (TETRA PEI)
    "+CTICN": 0, "+CTOCP": 0, "+CTCC": 0, "+CTCR": 0, "+CTXG": 0, "+CDTXC": 0,
    "+CTXI": 0, "+CTXN": 0, "+CTSDSR": 1, "+CTGS": 0, "+CTOM": 0, "+CTDGR": 0,
    # Iridium ISU
    "SBDRING": 0, "+SBDRING": 0, "+AREGI": 0,
}


class FinalResult(enum.Enum):
    """The final result codes of V.250 / TS 27.007 9.2 / TS 27.005 3.2.5."""

    OK = "OK"
    CONNECT = "CONNECT"
    ERROR = "ERROR"
    CME_ERROR = "+CME ERROR"
    CMS_ERROR = "+CMS ERROR"
    NO_CARRIER = "NO CARRIER"
    BUSY = "BUSY"
    NO_ANSWER = "NO ANSWER"
    NO_DIALTONE = "NO DIALTONE"


_SUCCESS = frozenset({FinalResult.OK, FinalResult.CONNECT})
#: Final only for commands that make or take a call (ATD, ATA, ATO, +CHLD); with anything
#: else in flight they are the far end hanging up, and the command's own answer is to come.
_CALL_PROGRESS = frozenset({FinalResult.CONNECT, FinalResult.NO_CARRIER, FinalResult.BUSY,
                            FinalResult.NO_ANSWER, FinalResult.NO_DIALTONE})
_EXACT_FINALS = {r.value: r for r in FinalResult if not r.value.startswith("+")}


def classify_final(line: str) -> tuple[FinalResult, int | None] | None:
    """The final result a line is, with its numeric error code, or ``None``."""
    exact = _EXACT_FINALS.get(line)
    if exact is not None:
        return exact, None
    if line.startswith("CONNECT "):
        return FinalResult.CONNECT, None
    for result in (FinalResult.CME_ERROR, FinalResult.CMS_ERROR):
        if line.startswith(result.value + ":"):
            text = line[len(result.value) + 1:].strip()
            # isascii: str.isdigit accepts "²", which int() refuses.
            numeric = text.isascii() and text.isdigit() and len(text) < 6
            return result, int(text) if numeric else None
    return None


class ProtocolErrorCode(enum.Enum):
    """What was wrong with bytes from the device (logged and dropped, never fatal)."""

    LINE_TOO_LONG = "line_too_long"
    UNEXPECTED_LINE = "unexpected_line"
    RESPONSE_TOO_LONG = "response_too_long"
    BAD_BINARY = "bad_binary"


# --- errors ---------------------------------------------------------------------------------


class AtError(Exception):
    """Root of every AT error."""


class AtUsageError(AtError, ValueError):
    """The caller asked for something that must never reach the wire."""


class AtControlCharacter(AtUsageError):
    """A command or payload holds a control character (< 0x20 or 0x7f)."""


class AtInvalidCommand(AtUsageError):
    """A command that does not start with ``AT`` or is too long."""


class AtCommandError(AtError):
    """The device ended a command with a failure result code."""

    def __init__(self, final: str, result: FinalResult, error_code: int | None,
                 lines: tuple[str, ...]) -> None:
        """Keep the final line, its kind, its numeric code and the lines before it."""
        super().__init__(final)
        self.final = final
        self.result = result
        self.error_code = error_code
        self.lines = lines


class AtCmeError(AtCommandError):
    """``+CME ERROR: <n>`` (TS 27.007 9.2): equipment or network error."""


class AtCmsError(AtCommandError):
    """``+CMS ERROR: <n>`` (TS 27.005 3.2.5): message service error."""


class AtCallFailed(AtCommandError):
    """``NO CARRIER`` / ``BUSY`` / ``NO ANSWER`` / ``NO DIALTONE`` for a call command."""


class AtTimeout(AtError, TimeoutError):
    """The device did not finish the command in time; the engine resynchronises."""


class AtLinkDown(AtError, ConnectionError):
    """The serial link went away with the command unanswered."""


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandCompleted:
    """A command ended with ``OK`` or ``CONNECT``; ``data`` is a binary response's body."""

    handle: int
    final: str
    lines: tuple[str, ...]
    data: bytes | None = None


@dataclass(frozen=True)
class CommandFailed:
    """A command ended with a failure result code."""

    handle: int
    final: str
    error_code: int | None
    lines: tuple[str, ...]
    result: FinalResult = FinalResult.ERROR


@dataclass(frozen=True)
class CommandTimedOut:
    """A command's deadline passed; ``lines`` are what had arrived."""

    handle: int
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Unsolicited:
    """An unsolicited result code: ``name`` (``+CMTI``), ``value`` (after the colon)."""

    name: str
    value: str
    extra_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resynchronised:
    """The device answered ``AT`` with ``OK`` again after a timeout."""

    probes: int


@dataclass(frozen=True)
class ProtocolError:
    """Bytes from the device that made no sense; dropped."""

    code: ProtocolErrorCode
    detail: str


Event = (CommandCompleted | CommandFailed | CommandTimedOut | Unsolicited | Resynchronised
         | ProtocolError)


@dataclass(frozen=True)
class AtSettings:
    """Limits and timers of one AT link."""

    max_line: int = 2048
    max_response_lines: int = 512
    max_queue: int = 256
    default_timeout: float = 5.0
    resync_interval: float = 1.0
    resync_settle: float = 0.25
    urcs: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_URCS))


class State(enum.Enum):
    """Where the engine is in the command cycle."""

    IDLE = "idle"
    AWAITING_PROMPT = "awaiting_prompt"
    AWAITING_BINARY = "awaiting_binary"
    AWAITING_FINAL = "awaiting_final"
    RESYNC = "resync"


@dataclass
class _Command:
    handle: int
    text: str
    expect_prompt: bool
    payload: str | None
    deadline: float
    binary: bool = False
    data: bytes | None = None
    bad_binary: bool = False
    lines: list[str] = field(default_factory=list)
    echo_seen: bool = False
    payload_echo_seen: bool = False
    overflowed: bool = False

    @property
    def response_prefix(self) -> str | None:
        """``+CREG`` for ``AT+CREG?``: lines with this name answer the command."""
        body = self.text[2:]
        if not body.startswith(("+", "$", "%", "^", "*")):
            return None
        end = len(body)
        for stop in "=?;":
            i = body.find(stop)
            if i >= 0:
                end = min(end, i)
        return body[:end].upper()

    @property
    def may_call(self) -> bool:
        """Whether call-progress codes (``NO CARRIER``, ``BUSY``, ...) can end this command."""
        body = self.text[2:].lstrip().upper()
        return body[:1] in ("D", "A", "O") or body.startswith(("+CHLD", "+CDU"))


def check_text(text: str, what: str) -> None:
    """Raise :class:`AtControlCharacter` if ``text`` holds a control character.

    Non-ASCII text is refused too (:class:`AtInvalidCommand`): a command
    channel carries ASCII, and UCS-2 or PDU payloads travel as hex.
    """
    if not text.isascii():
        raise AtInvalidCommand(f"{what} is not ASCII")
    for i, ch in enumerate(text):
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise AtControlCharacter(f"{what} has control character 0x{ord(ch):02x} at {i}")


def urc_name(line: str) -> tuple[str, str]:
    """Split ``+CMTI: "SM",3`` into (``+CMTI``, ``"SM",3``); a bare line is its own name."""
    head, sep, rest = line.partition(":")
    if sep and head and " " not in head.strip():
        return head.strip(), rest.strip()
    return line, ""


class AtEngine:
    """The AT command state machine for one device (see the module docstring)."""

    def __init__(self, settings: AtSettings | None = None) -> None:
        """Start idle with nothing queued."""
        self.settings = settings or AtSettings()
        self._next_handle = 1
        self._clear()

    def _clear(self) -> None:
        self.state = State.IDLE
        self._out = bytearray()
        self._buf = bytearray()
        self._discarding = False
        self._queue: deque[_Command] = deque()
        self._current: _Command | None = None
        self._urc: tuple[str, str, int, list[str]] | None = None
        self._resync_probe_at: float | None = None
        self._resync_settle_at: float | None = None
        self._resync_probes = 0
        self._resync_escape = False

    # --- caller side ----------------------------------------------------------------------

    @property
    def in_flight(self) -> int | None:
        """The handle of the command on the wire, if any."""
        return self._current.handle if self._current is not None else None

    @property
    def queued(self) -> tuple[int, ...]:
        """Handles waiting behind the one in flight, in order."""
        return tuple(c.handle for c in self._queue)

    def send(self, command: str, now: float, *, expect_prompt: bool = False,
             payload: str | None = None, timeout: float | None = None,
             binary_response: bool = False) -> int:
        """Queue ``command`` (``AT...`` without CR) and return its handle.

        ``payload`` is written after the ``"> "`` prompt when ``expect_prompt``,
        else straight after the command; Ctrl-Z is appended by the engine.
        ``binary_response`` reads an Iridium ``+SBDRB`` answer (2-byte length,
        bytes, 2-byte checksum) into ``CommandCompleted.data``.
        Raises :class:`AtControlCharacter` / :class:`AtInvalidCommand` before
        anything is written.
        """
        check_text(command, "command")
        if payload is not None:
            check_text(payload, "payload")
            if len(payload) > self.settings.max_line:
                raise AtInvalidCommand(f"payload longer than {self.settings.max_line}")
        elif expect_prompt:
            raise AtInvalidCommand("a prompt needs a payload")
        if not command[:2].upper() == "AT":
            raise AtInvalidCommand(f"not an AT command: {command[:20]!r}")
        if len(command) > self.settings.max_line:
            raise AtInvalidCommand(f"command longer than {self.settings.max_line}")
        if len(self._queue) >= self.settings.max_queue:
            raise AtInvalidCommand(f"more than {self.settings.max_queue} commands queued")
        handle = self._next_handle
        self._next_handle += 1
        wait = self.settings.default_timeout if timeout is None else timeout
        self._queue.append(_Command(handle, command, expect_prompt, payload, now + wait,
                                    binary_response))
        if self.state is State.IDLE:
            self._start_next(now)
        return handle

    def cancel(self, handle: int) -> bool:
        """Drop a queued (not yet written) command; ``False`` if it is not queued."""
        for command in self._queue:
            if command.handle == handle:
                self._queue.remove(command)
                return True
        return False

    def reset(self) -> list[int]:
        """Forget everything (the link was lost); return the handles that were pending."""
        pending = [c.handle for c in self._queue]
        if self._current is not None:
            pending.insert(0, self._current.handle)
        self._clear()
        return pending

    def data_to_send(self) -> bytes:
        """Bytes to write to the device now (empties the buffer)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None``."""
        timers = [c.deadline for c in self._queue]
        if self.state is State.RESYNC:
            timers.append(self._resync_settle_at if self._resync_settle_at is not None
                          else self._resync_probe_at or 0.0)
        elif self._current is not None:
            timers.append(self._current.deadline)
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> list[Event]:
        """Act on timers that are due at ``now``; return the events that result."""
        events: list[Event] = []
        for command in [c for c in self._queue if now >= c.deadline]:
            # Never written, so nothing on the wire is out of step: no resync for these.
            self._queue.remove(command)
            events.append(CommandTimedOut(command.handle, ()))
        handler = _TIMER_HANDLERS.get(self.state)
        if handler is not None:
            handler(self, now, events)
        return events

    def _command_deadline(self, now: float, events: list[Event]) -> None:
        command = self._current
        if command is None or now < command.deadline:
            return
        self._current = None
        events.append(CommandTimedOut(command.handle, tuple(command.lines)))
        self.state = State.RESYNC
        self._resync_probes = 0
        self._resync_escape = command.payload is not None
        self._probe(now)

    def _resync_timer(self, now: float, events: list[Event]) -> None:
        if self._resync_settle_at is not None:
            if now >= self._resync_settle_at:
                events.append(Resynchronised(self._resync_probes))
                self.state = State.IDLE
                self._resync_settle_at = self._resync_probe_at = None
                self._start_next(now)
        elif self._resync_probe_at is not None and now >= self._resync_probe_at:
            self._probe(now)

    # --- device side ----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the device; return the events they complete."""
        events: list[Event] = []
        self._buf += data
        while self._buf:
            self._skip_terminators()
            if not self._buf:
                break
            if (self.state is State.AWAITING_BINARY and not self._discarding
                    and self._buf[0] not in (0x41, 0x61)):  # "A": the echo comes first
                if not self._take_binary(events):
                    break
                continue
            if self.state is State.AWAITING_PROMPT and not self._discarding:
                if self._buf[:2] == b"> ":
                    del self._buf[:2]
                    self._release_payload()
                    continue
                if self._buf == b">":
                    break
            line = self._take_line(events)
            if line is None:
                break
            self._on_line(line, now, events)
        return events

    def _take_binary(self, events: list[Event]) -> bool:
        """Read ``+SBDRB``'s length-prefixed, checksummed body; ``False`` if incomplete."""
        command = self._current
        if command is None or len(self._buf) < 2:
            return command is None
        length = int.from_bytes(self._buf[:2], "big")
        if length > self.settings.max_line:
            events.append(ProtocolError(ProtocolErrorCode.BAD_BINARY,
                                        f"binary length {length} over {self.settings.max_line}"))
            command.bad_binary = True
            self.state = State.AWAITING_FINAL
            return True
        if len(self._buf) < length + 4:
            return False
        data = bytes(self._buf[2:2 + length])
        checksum = int.from_bytes(self._buf[2 + length:4 + length], "big")
        del self._buf[:length + 4]
        if checksum != sum(data) & 0xFFFF:
            events.append(ProtocolError(ProtocolErrorCode.BAD_BINARY, "checksum mismatch"))
            command.bad_binary = True
        else:
            command.data = data
        self.state = State.AWAITING_FINAL
        return True

    def _skip_terminators(self) -> None:
        i = 0
        while i < len(self._buf) and self._buf[i] in (0x0D, 0x0A):
            i += 1
        if i:
            if self._discarding:
                self._discarding = False
            del self._buf[:i]

    def _take_line(self, events: list[Event]) -> str | None:
        cr, lf = self._buf.find(b"\r"), self._buf.find(b"\n")
        ends = [i for i in (cr, lf) if i >= 0]
        limit = self.settings.max_line
        if not ends:
            if len(self._buf) > limit:
                if not self._discarding:
                    events.append(ProtocolError(ProtocolErrorCode.LINE_TOO_LONG,
                                                f"no line end within {limit} bytes"))
                self._discarding = True
                self._urc = None  # its payload line is lost; don't take the next line for it
                self._buf.clear()
            return None
        end = min(ends)
        raw = bytes(self._buf[:end])
        del self._buf[:end]
        if self._discarding:
            # The tail of an overlong line: dropped, already reported.
            self._discarding = False
            return ""
        if end > limit:
            events.append(ProtocolError(ProtocolErrorCode.LINE_TOO_LONG,
                                        f"line of {end} bytes, limit {limit}"))
            self._urc = None
            return ""
        # Latin-1 never fails: a garbled byte stays a visible character in the line.
        return raw.decode("latin-1").strip(" ")

    def _on_line(self, line: str, now: float, events: list[Event]) -> None:
        if not line:
            return
        if self._urc is not None and classify_final(line) is not None:
            # Payload lines are hex; a result code here means the payload never came.
            name, value, _, extra = self._urc
            self._urc = None
            events.append(Unsolicited(name, value, tuple(extra)))
        if self._urc is not None:
            name, value, remaining, extra = self._urc
            extra.append(line)
            if remaining <= 1:
                self._urc = None
                events.append(Unsolicited(name, value, tuple(extra)))
            else:
                self._urc = (name, value, remaining - 1, extra)
            return
        command = self._current
        if command is not None and self._is_echo(command, line):
            return
        if self.state is State.AWAITING_PROMPT and line == ">":
            self._release_payload()
            return
        if command is not None:
            final = classify_final(line)
            if final is not None and (final[0] not in _CALL_PROGRESS or command.may_call):
                self._finish(command, line, final, now, events)
                return
        name, value = urc_name(line)
        follow = self.settings.urcs.get(name)
        if follow is not None and (command is None or name.upper() != command.response_prefix):
            if follow == 0:
                events.append(Unsolicited(name, value))
            else:
                self._urc = (name, value, follow, [])
            return
        if command is not None:
            if len(command.lines) >= self.settings.max_response_lines:
                if not command.overflowed:
                    command.overflowed = True
                    events.append(ProtocolError(
                        ProtocolErrorCode.RESPONSE_TOO_LONG,
                        f"more than {self.settings.max_response_lines} lines"))
                return
            command.lines.append(line)
        elif self.state is State.RESYNC:
            if line == "OK":
                self._resync_settle_at = now + self.settings.resync_settle
        else:
            events.append(ProtocolError(ProtocolErrorCode.UNEXPECTED_LINE, line[:80]))

    def _is_echo(self, command: _Command, line: str) -> bool:
        if not command.echo_seen and not command.lines and line.upper() == command.text.upper():
            command.echo_seen = True
            return True
        if (command.payload is not None and not command.payload_echo_seen
                and line.replace("\x1a", "") == command.payload):
            command.payload_echo_seen = True
            return True
        return False

    def _finish(self, command: _Command, line: str, final: tuple[FinalResult, int | None],
                now: float, events: list[Event]) -> None:
        result, code = final
        lines = tuple(command.lines)
        if result in _SUCCESS and command.bad_binary:
            # The device said OK but the body it sent was corrupt: the caller must not use it.
            events.append(CommandFailed(command.handle, line, None, lines, FinalResult.ERROR))
        elif result in _SUCCESS:
            events.append(CommandCompleted(command.handle, line, lines, command.data))
        else:
            events.append(CommandFailed(command.handle, line, code, lines, result))
        self._current = None
        self.state = State.IDLE
        self._start_next(now)

    # --- writing --------------------------------------------------------------------------

    def _start_next(self, now: float) -> None:
        if not self._queue:
            return
        command = self._queue.popleft()
        self._current = command
        self._out += command.text.encode("ascii", "replace") + b"\r"
        if command.expect_prompt:
            self.state = State.AWAITING_PROMPT
            return
        if command.binary:
            self.state = State.AWAITING_BINARY
            return
        self.state = State.AWAITING_FINAL
        if command.payload is not None:
            self._out += b"\n" + command.payload.encode("ascii", "replace") + CTRL_Z

    def _release_payload(self) -> None:
        command = self._current
        if command is None or command.payload is None:
            return
        self._out += command.payload.encode("ascii", "replace") + CTRL_Z
        self.state = State.AWAITING_FINAL

    def _probe(self, now: float) -> None:
        if self._resync_escape:
            # A text-entry prompt may still be open: ESC abandons it (TS 27.005 3.5.1).
            self._out += ESC
        self._out += b"AT\r"
        self._resync_probes += 1
        self._resync_probe_at = now + self.settings.resync_interval


#: What a timer means in each state (IDLE has none of its own).
_TIMER_HANDLERS: dict[State, Callable[[AtEngine, float, list[Event]], None]] = {
    State.AWAITING_PROMPT: AtEngine._command_deadline,
    State.AWAITING_BINARY: AtEngine._command_deadline,
    State.AWAITING_FINAL: AtEngine._command_deadline,
    State.RESYNC: AtEngine._resync_timer,
}
