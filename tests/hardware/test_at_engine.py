"""The sans-I/O AT engine: byte streams to events, fed whole and one byte at a time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.at import (
    AtControlCharacter,
    AtEngine,
    AtInvalidCommand,
    AtSettings,
    CommandCompleted,
    CommandFailed,
    CommandTimedOut,
    Event,
    FinalResult,
    ProtocolError,
    ProtocolErrorCode,
    Resynchronised,
    State,
    Unsolicited,
)

PDU = "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"


def feed(engine: AtEngine, data: bytes, now: float, bytewise: bool) -> list[Event]:
    if not bytewise:
        return engine.receive_data(data, now)
    events: list[Event] = []
    for i in range(len(data)):
        events += engine.receive_data(data[i:i + 1], now)
    return events


# (command, bytes from the device, expected events); the command has handle 1.
ROUND_TRIPS: list[tuple[str, bytes, list[Event]]] = [
    ("AT", b"\r\nOK\r\n", [CommandCompleted(1, "OK", ())]),
    ("AT+CSQ", b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n", [CommandCompleted(1, "OK", ("+CSQ: 21,99",))]),
    ("AT+CSQ", b"AT+CSQ\r\r\n+CSQ: 21,99\r\n\r\nOK\r\n", [CommandCompleted(1, "OK", ("+CSQ: 21,99",))]),
    ("at+csq", b"at+csq\r\r\n+CSQ: 5,99\r\n\r\nOK\r\n", [CommandCompleted(1, "OK", ("+CSQ: 5,99",))]),
    ("AT+CREG?", b"\r\n+CREG: 0,1\r\n\r\nOK\r\n", [CommandCompleted(1, "OK", ("+CREG: 0,1",))]),
    ("AT+CSQ", b"\r\n+CREG: 1\r\n+CSQ: 9,99\r\nOK\r\n",
     [Unsolicited("+CREG", "1"), CommandCompleted(1, "OK", ("+CSQ: 9,99",))]),
    ("AT+CMGL=4", b'\r\n+CMGL: 1,1,,5\r\n0011\r\n+CMTI: "SM",3\r\n\r\nOK\r\n',
     [Unsolicited("+CMTI", '"SM",3'), CommandCompleted(1, "OK", ("+CMGL: 1,1,,5", "0011"))]),
    ("AT+FOO", b"\r\nERROR\r\n", [CommandFailed(1, "ERROR", None, (), FinalResult.ERROR)]),
    ("AT+CPIN?", b"\r\n+CME ERROR: 10\r\n", [CommandFailed(1, "+CME ERROR: 10", 10, (), FinalResult.CME_ERROR)]),
    ("AT+CPIN?", b"\r\n+CME ERROR: SIM not inserted\r\n",
     [CommandFailed(1, "+CME ERROR: SIM not inserted", None, (), FinalResult.CME_ERROR)]),
    ("AT+CPIN?", b"\r\n+CME ERROR: \xb2\r\n", [CommandFailed(1, "+CME ERROR: \xb2", None, (), FinalResult.CME_ERROR)]),
    ("AT+CMGR=9", b"\r\n+CMS ERROR: 321\r\n", [CommandFailed(1, "+CMS ERROR: 321", 321, (), FinalResult.CMS_ERROR)]),
    ("ATD112;", b"\r\nBUSY\r\n", [CommandFailed(1, "BUSY", None, (), FinalResult.BUSY)]),
    ("ATD112;", b"\r\nNO CARRIER\r\n", [CommandFailed(1, "NO CARRIER", None, (), FinalResult.NO_CARRIER)]),
    ("ATD112;", b"\r\nNO ANSWER\r\n", [CommandFailed(1, "NO ANSWER", None, (), FinalResult.NO_ANSWER)]),
    ("ATD112;", b"\r\nNO DIALTONE\r\n", [CommandFailed(1, "NO DIALTONE", None, (), FinalResult.NO_DIALTONE)]),
    ("ATD*99#", b"\r\nCONNECT 9600\r\n", [CommandCompleted(1, "CONNECT 9600", ())]),
    ("AT+CLCC", b'\r\nRING\r\n+CLIP: "+8613800000000",145\r\n+CLCC: 1,1,4,0,0,"+8613800000000",145\r\nOK\r\n',
     [Unsolicited("RING", ""), Unsolicited("+CLIP", '"+8613800000000",145'),
      CommandCompleted(1, "OK", ('+CLCC: 1,1,4,0,0,"+8613800000000",145',))]),
    ("AT+CTXD=1,0", b"\r\nOK\r\n+CTXG: 1,0,0,0\r\n",
     [CommandCompleted(1, "OK", ()), Unsolicited("+CTXG", "1,0,0,0")]),
    ("AT", b"\r\n+CTSDSR: 12,2001,0,1001,0,48\r\n0201414243\r\nOK\r\n",
     [Unsolicited("+CTSDSR", "12,2001,0,1001,0,48", ("0201414243",)), CommandCompleted(1, "OK", ())]),
    ("AT+SBDIX", b"\r\n+SBDIX: 0, 5, 1, 2, 11, 0\r\n\r\nOK\r\n",
     [CommandCompleted(1, "OK", ("+SBDIX: 0, 5, 1, 2, 11, 0",))]),
    ("AT+CSQ", b"\n+CSQ: 3\nOK\n", [CommandCompleted(1, "OK", ("+CSQ: 3",))]),
    # A +CMT whose PDU line never came: the final result is not taken as its payload.
    ("AT+CSQ", b"\r\n+CSQ: 3\r\n+CMT: ,22\r\nOK\r\n",
     [Unsolicited("+CMT", ",22"), CommandCompleted(1, "OK", ("+CSQ: 3",))]),
    # The far end hangs up while an unrelated command runs: not that command's answer.
    ("AT+CSQ", b"\r\nNO CARRIER\r\n+CSQ: 9,99\r\n\r\nOK\r\n",
     [Unsolicited("NO CARRIER", ""), CommandCompleted(1, "OK", ("+CSQ: 9,99",))]),
    ("ATA", b"\r\nNO CARRIER\r\n", [CommandFailed(1, "NO CARRIER", None, (), FinalResult.NO_CARRIER)]),
    ("AT+CHLD=1", b"\r\nNO CARRIER\r\n", [CommandFailed(1, "NO CARRIER", None, (), FinalResult.NO_CARRIER)]),
]

# Bytes with nothing in flight.
IDLE_STREAMS: list[tuple[bytes, list[Event]]] = [
    (b"\r\nRING\r\n", [Unsolicited("RING", "")]),
    (b'\r\n+CMTI: "SM",1\r\n', [Unsolicited("+CMTI", '"SM",1')]),
    (b"\r\n+CMT: ,24\r\n" + PDU.encode() + b"\r\n", [Unsolicited("+CMT", ",24", (PDU,))]),
    (b"\r\nNO CARRIER\r\n", [Unsolicited("NO CARRIER", "")]),
    (b"\r\nSBDRING\r\n", [Unsolicited("SBDRING", "")]),
    (b"\r\n+CTICN: 1,0,0,4,2001,1,1,0,1,1,0,1001,0\r\n+CTXG: 1,3,0,0,1,2001\r\n+CDTXC: 1,0\r\n+CTCR: 1,1\r\n",
     [Unsolicited("+CTICN", "1,0,0,4,2001,1,1,0,1,1,0,1001,0"), Unsolicited("+CTXG", "1,3,0,0,1,2001"),
      Unsolicited("+CDTXC", "1,0"), Unsolicited("+CTCR", "1,1")]),
    (b"\r\nhello\r\n", [ProtocolError(ProtocolErrorCode.UNEXPECTED_LINE, "hello")]),
    (b"\r\n\r\n\n\r", []),
]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("command", "stream", "expected"), ROUND_TRIPS)
def test_round_trips(command: str, stream: bytes, expected: list[Event], bytewise: bool) -> None:
    engine = AtEngine()
    assert engine.send(command, 0.0) == 1
    assert engine.data_to_send() == command.encode() + b"\r"
    assert feed(engine, stream, 0.1, bytewise) == expected
    assert engine.state is State.IDLE and engine.in_flight is None and engine.get_timer() is None


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("stream", "expected"), IDLE_STREAMS)
def test_idle_streams(stream: bytes, expected: list[Event], bytewise: bool) -> None:
    assert feed(AtEngine(), stream, 0.0, bytewise) == expected


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("echo", [False, True], ids=["ate0", "ate1"])
def test_pdu_mode_send_waits_for_prompt_then_writes_payload_and_ctrl_z(bytewise: bool, echo: bool) -> None:
    engine = AtEngine()
    engine.send("AT+CMGS=23", 0.0, expect_prompt=True, payload=PDU)
    assert engine.data_to_send() == b"AT+CMGS=23\r"
    assert feed(engine, (b"AT+CMGS=23\r" if echo else b"") + b"\r\n> ", 0.1, bytewise) == []
    assert engine.data_to_send() == PDU.encode() + b"\x1a"
    tail = (PDU.encode() + b"\x1a" if echo else b"") + b"\r\n+CMGS: 5\r\n\r\nOK\r\n"
    assert feed(engine, tail, 0.2, bytewise) == [CommandCompleted(1, "OK", ("+CMGS: 5",))]


def test_prompt_refused_with_cms_error() -> None:
    engine = AtEngine()
    engine.send("AT+CMGS=23", 0.0, expect_prompt=True, payload=PDU)
    engine.data_to_send()
    assert engine.receive_data(b"\r\n+CMS ERROR: 304\r\n", 0.1) == [
        CommandFailed(1, "+CMS ERROR: 304", 304, (), FinalResult.CMS_ERROR)]
    assert engine.data_to_send() == b""


def test_payload_without_prompt_is_written_with_the_command_pei_style() -> None:
    engine = AtEngine()
    engine.send("AT+CMGS=1001,32", 0.0, payload="02014142")
    assert engine.data_to_send() == b"AT+CMGS=1001,32\r\n02014142\x1a"
    assert engine.receive_data(b"\r\n+CMGS: 0,4,7\r\n\r\nOK\r\n", 0.1) == [
        CommandCompleted(1, "OK", ("+CMGS: 0,4,7",))]


def test_commands_queue_and_go_one_at_a_time_in_order() -> None:
    engine = AtEngine()
    handles = [engine.send(c, 0.0) for c in ("AT", "AT+CSQ", "AT+CREG?")]
    assert handles == [1, 2, 3]
    assert engine.data_to_send() == b"AT\r" and engine.in_flight == 1 and engine.queued == (2, 3)
    assert engine.cancel(3) and not engine.cancel(1)
    assert engine.receive_data(b"\r\nOK\r\n", 0.5) == [CommandCompleted(1, "OK", ())]
    assert engine.data_to_send() == b"AT+CSQ\r" and engine.get_timer() == 5.0
    assert engine.receive_data(b"\r\nERROR\r\n", 0.6) == [CommandFailed(2, "ERROR", None, (), FinalResult.ERROR)]
    assert engine.data_to_send() == b"" and engine.in_flight is None


def test_timeout_then_resync_absorbs_the_late_answer_and_keeps_the_queue() -> None:
    engine = AtEngine(AtSettings(resync_interval=1.0, resync_settle=0.25))
    engine.send("AT+CSQ", 0.0, timeout=2.0)
    engine.data_to_send()
    assert engine.get_timer() == 2.0
    assert engine.handle_timer(1.9) == [] and engine.data_to_send() == b""
    assert engine.receive_data(b"\r\n+CSQ: 1", 1.95) == []
    assert engine.handle_timer(2.0) == [CommandTimedOut(1, ())]
    assert engine.state is State.RESYNC and engine.data_to_send() == b"AT\r"
    assert engine.send("AT+CREG?", 2.5) == 2
    assert engine.data_to_send() == b"" and engine.get_timer() == 3.0
    assert engine.handle_timer(3.0) == [] and engine.data_to_send() == b"AT\r"
    assert engine.get_timer() == 4.0
    # The late answer of AT+CSQ, its OK, then a probe's OK: all absorbed.
    assert engine.receive_data(b",99\r\n\r\nOK\r\n", 3.1) == []
    assert engine.get_timer() == pytest.approx(3.35)
    assert engine.receive_data(b"AT\r\r\nOK\r\n", 3.2) == []
    assert engine.get_timer() == pytest.approx(3.45)
    assert engine.handle_timer(3.3) == []
    assert engine.handle_timer(3.45) == [Resynchronised(2)]
    assert engine.state is State.AWAITING_FINAL and engine.data_to_send() == b"AT+CREG?\r"
    assert engine.get_timer() == pytest.approx(7.5)  # 5 s from send(), queueing included


def test_queued_commands_time_out_without_resync_when_the_device_stays_dead() -> None:
    engine = AtEngine(AtSettings(resync_interval=1.0))
    engine.send("AT+CSQ", 0.0, timeout=1.0)
    engine.send("AT+CREG?", 0.5, timeout=3.0)
    assert engine.get_timer() == 1.0
    assert engine.handle_timer(1.0) == [CommandTimedOut(1, ())]
    engine.data_to_send()
    assert engine.get_timer() == 2.0
    engine.handle_timer(2.0)
    assert engine.get_timer() == 3.0
    engine.handle_timer(3.0)
    assert engine.get_timer() == 3.5
    assert engine.handle_timer(3.5) == [CommandTimedOut(2, ())]
    assert engine.queued == () and engine.state is State.RESYNC and engine.get_timer() == 4.0
    assert engine.data_to_send() == b"AT\rAT\r"


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_prompt_on_a_line_of_its_own(bytewise: bool) -> None:
    engine = AtEngine()
    engine.send("AT+CMGS=23", 0.0, expect_prompt=True, payload=PDU)
    engine.data_to_send()
    assert feed(engine, b"\r\n>\r\n", 0.1, bytewise) == []
    assert engine.data_to_send() == PDU.encode() + b"\x1a"


def test_urcs_are_delivered_while_resynchronising() -> None:
    engine = AtEngine()
    engine.send("AT", 0.0, timeout=1.0)
    engine.handle_timer(1.0)
    assert engine.receive_data(b"\r\nRING\r\n", 1.1) == [Unsolicited("RING", "")]


def test_timeout_waiting_for_a_prompt_escapes_the_text_mode_first() -> None:
    engine = AtEngine()
    engine.send("AT+CMGS=23", 0.0, expect_prompt=True, payload=PDU, timeout=1.0)
    engine.data_to_send()
    assert engine.handle_timer(1.0) == [CommandTimedOut(1, ())]
    assert engine.data_to_send() == b"\x1bAT\r"


@pytest.mark.parametrize(("command", "payload", "error"), [
    ("AT\r", None, AtControlCharacter),
    ("AT+CMGS=1\x1a", None, AtControlCharacter),
    ("ATD112;\x7f", None, AtControlCharacter),
    ("AT\nATH", None, AtControlCharacter),
    ("AT+CMGS=5", "0011\x1a", AtControlCharacter),
    ("AT+CMGS=5", "00\x1b11", AtControlCharacter),
    ("AT+CMGS=5", "00\r11", AtControlCharacter),
    ("ATD11０;", None, AtInvalidCommand),
    ("+CSQ", None, AtInvalidCommand),
    ("", None, AtInvalidCommand),
    ("AT" + "1" * 3000, None, AtInvalidCommand),
])
def test_bad_commands_are_refused_before_anything_is_written(
        command: str, payload: str | None, error: type[Exception]) -> None:
    engine = AtEngine()
    with pytest.raises(error):
        engine.send(command, 0.0, expect_prompt=payload is not None, payload=payload)
    assert engine.data_to_send() == b"" and engine.in_flight is None


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_overlong_line_is_reported_once_and_skipped(bytewise: bool) -> None:
    engine = AtEngine(AtSettings(max_line=16))
    events = feed(engine, b"X" * 40 + b"\r\nRING\r\n" + b"Y" * 17 + b"\r\n", 0.0, bytewise)
    assert [type(e) for e in events] == [ProtocolError, Unsolicited, ProtocolError]
    assert all(e.code is ProtocolErrorCode.LINE_TOO_LONG for e in events if isinstance(e, ProtocolError))


def test_overlong_urc_payload_abandons_the_urc() -> None:
    engine = AtEngine(AtSettings(max_line=16))
    engine.send("AT", 0.0)
    events = engine.receive_data(b"\r\n+CMT: ,99\r\n" + b"A" * 40 + b"\r\nOK\r\n", 0.1)
    assert events == [ProtocolError(ProtocolErrorCode.LINE_TOO_LONG, "line of 40 bytes, limit 16"),
                      CommandCompleted(1, "OK", ())]


def test_response_line_count_is_capped() -> None:
    engine = AtEngine(AtSettings(max_response_lines=2))
    engine.send("AT+CMGL=4", 0.0)
    events = engine.receive_data(b"a\r\nb\r\nc\r\nd\r\nOK\r\n", 0.1)
    assert events == [ProtocolError(ProtocolErrorCode.RESPONSE_TOO_LONG, "more than 2 lines"),
                      CommandCompleted(1, "OK", ("a", "b"))]


def test_reset_returns_pending_handles() -> None:
    engine = AtEngine()
    engine.send("AT", 0.0)
    engine.send("AT+CSQ", 0.0)
    assert engine.reset() == [1, 2]
    assert engine.state is State.IDLE and engine.get_timer() is None
    assert engine.send("AT", 1.0) == 3


commands = st.sampled_from(["AT", "AT+CSQ", "AT+CREG?", "ATD112;", "AT+CMGS=5"])
chunks = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"\r\nOK\r\n", b"> ", b"\r\nERROR\r\n", b"RING\r\n", b"+CMT: ,3\r\n",
                     b"\r\n+CME ERROR: 3\r\n", b"\x1a", b">", b"\r",
                     b"+CMS ERROR: \xb9\r\n", b"NO CARRIER\r\n"]),
)
steps = st.lists(st.tuples(st.sampled_from(["send", "data", "tick"]), commands, chunks), max_size=40)


@settings(max_examples=300, deadline=None)
@given(steps=steps, max_line=st.integers(12, 64))
def test_any_bytes_never_break_the_engine_and_one_command_is_in_flight(
        steps: list[tuple[str, str, bytes]], max_line: int) -> None:
    engine = AtEngine(AtSettings(max_line=max_line, default_timeout=1.0, resync_interval=0.5,
                                 resync_settle=0.1))
    now = 0.0
    sent: list[int] = []
    finished: list[int] = []
    completed: set[int] = set()
    for action, command, chunk in steps:
        now += 0.3
        if action == "send":
            prompt = command.startswith("AT+CMGS")
            sent.append(engine.send(command, now, expect_prompt=prompt, payload="00" if prompt else None))
            events: list[Event] = []
        elif action == "data":
            before = engine.in_flight
            events = engine.receive_data(chunk, now)
            assert all(e.handle == before for e in events
                       if isinstance(e, CommandCompleted | CommandFailed))
        else:
            timer = engine.get_timer()
            events = engine.handle_timer(now) if timer is not None and timer <= now else []
        for event in events:
            if isinstance(event, CommandCompleted | CommandFailed | CommandTimedOut):
                finished.append(event.handle)
            if isinstance(event, CommandCompleted | CommandFailed):
                completed.add(event.handle)
        assert engine.in_flight is None or engine.in_flight not in engine.queued
        engine.data_to_send()
    assert len(set(finished)) == len(finished)
    answered = [h for h in finished if h in completed]
    assert answered == sorted(answered)
    assert set(finished) <= set(sent)


SBD = b"\r\n\x00OK\r\n\x1a"


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("echo", [False, True], ids=["ate0", "ate1"])
def test_binary_sbdrb_body_may_hold_any_byte(bytewise: bool, echo: bool) -> None:
    engine = AtEngine()
    engine.send("AT+SBDRB", 0.0, binary_response=True)
    assert engine.data_to_send() == b"AT+SBDRB\r"
    body = len(SBD).to_bytes(2, "big") + SBD + sum(SBD).to_bytes(2, "big")
    stream = (b"AT+SBDRB\r" if echo else b"") + body + b"\r\nOK\r\n"
    assert feed(engine, stream, 0.1, bytewise) == [CommandCompleted(1, "OK", (), SBD)]


def test_binary_with_a_bad_checksum_fails_the_command() -> None:
    engine = AtEngine()
    engine.send("AT+SBDRB", 0.0, binary_response=True)
    body = len(SBD).to_bytes(2, "big") + SBD + b"\x00\x00"
    assert engine.receive_data(body + b"\r\nOK\r\n", 0.1) == [
        ProtocolError(ProtocolErrorCode.BAD_BINARY, "checksum mismatch"),
        CommandFailed(1, "OK", None, (), FinalResult.ERROR)]
