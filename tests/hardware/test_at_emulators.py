"""The emulators on their own: command parsing, raw bytes on the pty, the CLI entry."""

from __future__ import annotations

import asyncio
import os
import sys
import tty
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.emulators import (
    EMULATORS,
    GsmModemEmulator,
    SatellitePhoneEmulator,
    TetraRadioEmulator,
    decode_simple_text_sds,
    simple_text_sds,
)
from hardware.emulators.base import AtEmulator, parse_command, split_args
from hardware.emulators.gsm import tpdu_length

WAIT = 5.0


@pytest.mark.parametrize(("body", "parsed"), [
    ("", ("", "", "")),
    ("+CMGS=23", ("+CMGS", "=", "23")),
    ("+creg?", ("+CREG", "?", "")),
    ("+CSQ=?", ("+CSQ", "=?", "")),
    ("+CSQ", ("+CSQ", "", "")),
    ("D112;", ("D", "", "112;")),
    ("E0", ("E", "", "0")),
    ("&F", ("&F", "", "")),
    ("+SBDD0", ("+SBDD0", "", "")),
])
def test_parse_command(body: str, parsed: tuple[str, str, str]) -> None:
    assert parse_command(body) == parsed


def test_split_args_and_pdu_lengths() -> None:
    assert split_args('2,"SM",3') == ["2", "SM", "3"] and split_args("") == []
    assert tpdu_length("0011000D91683119325476F80000AA05E8329BFD06") == 20
    assert tpdu_length("0791683108100005F0") == 1 and tpdu_length("07916831081000") is None
    assert tpdu_length("00ZZ") is None and tpdu_length("001") is None


def test_simple_text_sds_round_trip() -> None:
    bits, data = simple_text_sds("Évacuez")
    assert bits == len(data) * 4 and data.startswith("0201")
    assert decode_simple_text_sds(data) == "Évacuez"
    assert decode_simple_text_sds("8204") is None and decode_simple_text_sds("zz") is None


class Pty:
    """The client end of an emulator, read and written raw."""

    def __init__(self, emulator: AtEmulator) -> None:
        self.emulator = emulator
        self.fd = os.open(emulator.open(), os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.buf = b""

    async def until(self, marker: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        while marker not in self.buf:
            ready = loop.create_future()
            loop.add_reader(self.fd, ready.set_result, None)
            try:
                await asyncio.wait_for(ready, WAIT)
            finally:
                loop.remove_reader(self.fd)
            self.buf += os.read(self.fd, 4096)
        out, _, self.buf = self.buf.partition(marker)
        return out + marker

    def close(self) -> None:
        os.close(self.fd)
        self.emulator.close()


async def test_gsm_prompt_and_echo_bytes_on_the_wire() -> None:
    wire = Pty(GsmModemEmulator(echo=True))
    try:
        os.write(wire.fd, b"AT+CMGS=20\r")
        assert await wire.until(b"> ") == b"AT+CMGS=20\r\r\n> "
        os.write(wire.fd, b"0011000D91683119325476F80000AA05E8329BFD06\x1a")
        assert (await wire.until(b"OK\r\n")).endswith(b"\x1a\r\n+CMGS: 1\r\n\r\nOK\r\n")
        os.write(wire.fd, b"AT+CMGS=20\r")
        await wire.until(b"> ")
        os.write(wire.fd, b"00\x1bAT\r")
        assert (await wire.until(b"OK\r\n")).endswith(b"AT\r\r\nOK\r\n")
        os.write(wire.fd, b"ATX\r")
        assert (await wire.until(b"ERROR\r\n")).endswith(b"ATX\r\r\nERROR\r\n")
        os.write(wire.fd, b"hello\r")
        assert (await wire.until(b"ERROR\r\n")).endswith(b"\r\nERROR\r\n")
    finally:
        wire.close()


async def test_satphone_binary_read_and_sbdwt_ready() -> None:
    phone = SatellitePhoneEmulator(echo=False)
    wire = Pty(phone)
    try:
        os.write(wire.fd, b"AT+SBDWT\r")
        assert await wire.until(b"READY\r\n") == b"\r\nREADY\r\n"
        os.write(wire.fd, b"status ok\r")
        assert await wire.until(b"OK\r\n") == b"\r\n0\r\n\r\nOK\r\n"
        assert phone.mo_buffer == b"status ok"
        phone.inject_mt_message(b"\x00\x01go")
        await wire.until(b"SBDRING\r\n")
        os.write(wire.fd, b"AT+SBDIX\r")
        await wire.until(b"OK\r\n")
        os.write(wire.fd, b"AT+SBDRB\r")
        data = b"\x00\x01go"
        assert await wire.until(b"OK\r\n") == (
            b"\x00\x04" + data + sum(data).to_bytes(2, "big") + b"\r\nOK\r\n")
    finally:
        wire.close()


async def test_tetra_sds_with_prompt_when_asked() -> None:
    radio = TetraRadioEmulator(sds_prompt=True)
    wire = Pty(radio)
    try:
        os.write(wire.fd, b"AT+CMGS=2001,32\r")
        await wire.until(b"> ")
        os.write(wire.fd, b"02014142\x1a")
        assert await wire.until(b"OK\r\n") == b"\r\n+CMGS: 0,4,1\r\n\r\nOK\r\n"
        assert radio.sds_sent[0].user_data == "02014142"
    finally:
        wire.close()


async def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "ttyGSM0"
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hardware.emulators", "gsm", "--link", str(link), "--no-echo",
        cwd=root, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        ready = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert ready.startswith(b"ready " + str(link).encode())
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            os.write(fd, b"AT+CSQ\r")
            loop = asyncio.get_running_loop()
            got = b""
            while b"OK\r\n" not in got:
                got += await asyncio.wait_for(loop.run_in_executor(None, os.read, fd, 256), WAIT)
            assert got == b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n"
        finally:
            os.close(fd)
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        assert not link.exists() and not link.is_symlink()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


command_bodies = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30),
    st.sampled_from(["+CMGS=", "+CMGR=", "+CMGD=", "+CTXD=", "+CUTXC=", "+CTGS=", "+CMGS=1",
                     "+CNMI=", "+SBDWT", "+SBDWT=", "D", "A", "H", "E", "+CMEE=", "+CTSDS="]),
)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.one_of(
    st.binary(max_size=20),
    st.builds(lambda b, t: b"AT" + b.encode("latin-1") + t,
              command_bodies.map(lambda c: c) | st.just(""), st.sampled_from([b"\r", b"\x1a", b""])),
    st.builds(lambda prefix, body: (prefix + body).encode("latin-1") + b"\r",
              st.sampled_from(["AT+CMGS=", "AT+CMGR=", "AT+CTXD=", "AT+CMGD=", "AT+CTGS=1,"]),
              st.text(alphabet="0123456789²³¹,\"", max_size=6)),
), max_size=30), kind=st.sampled_from(["gsm", "satphone", "tetra"]))
def test_any_bytes_never_break_an_emulator(chunks: list[bytes], kind: str) -> None:
    emulator = EMULATORS[kind]()
    for chunk in chunks:
        emulator.feed(chunk)
