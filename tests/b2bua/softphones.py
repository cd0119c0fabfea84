"""Real softphones for the B2BUA tests: baresip (driven over ctrl_tcp) and pyVoIP."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import struct
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

from b2bua_helpers import free_port, need


def tone_wav(path: Path, seconds: float = 30.0, freq: float = 1000.0) -> Path:
    """A 16-bit 8 kHz mono sine (baresip hangs up when its WAV ends: make it long)."""
    rate = 8000
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate)))
                      for i in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


class Baresip:
    """One baresip instance registered to dispatchd, auto-answering, on ctrl_tcp."""

    def __init__(self, tmp: Path, user: str, password: str, registrar_port: int,
                 domain: str, *, freq: float = 1000.0, dump: bool = False,
                 seconds: float = 30.0, transport: str = "udp",
                 cafile: Path | None = None) -> None:
        """``freq``: the tone it sends; ``dump``: write what it hears/sends (sndfile)
        to ``dump-*-dec.wav`` / ``-enc.wav`` in its directory; ``transport = "tls"``
        registers over TLS, trusting ``cafile``."""
        self.dir = tmp / f"baresip-{user}"
        self.dir.mkdir()
        self.sip_port = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        wav = tone_wav(self.dir / "tone.wav", seconds, freq)
        dumping = ["module sndfile.so", f"snd_path {self.dir}"] if dump else []
        (self.dir / "config").write_text("\n".join([
            f"sip_listen 127.0.0.1:{self.sip_port}", "net_interface 127.0.0.1",
            f"audio_source aufile,{wav}", "audio_player aubridge,nil",
            "module_path /usr/lib/baresip/modules",
            "module g711.so", "module aufile.so", "module aubridge.so", *dumping,
            *([f"sip_cafile {cafile}"] if cafile else []),
            "module_app account.so", "module_app menu.so", "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}", ""]))
        (self.dir / "accounts").write_text(
            f"<sip:{user}@127.0.0.1:{registrar_port}"
            f"{'' if transport == 'udp' else f';transport={transport}'}>"
            f";auth_pass={password};regint=600;"
            "answermode=auto;audio_codecs=PCMU\n")
        self.proc = subprocess.Popen([need("baresip"), "-f", str(self.dir)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def connect(self, timeout: float = 15.0) -> None:
        """Open the ctrl_tcp connection (baresip listens once its modules are loaded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.ctrl_port), 1)
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def wait_event(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next event of ``kind`` (REGISTER_OK, CALL_ESTABLISHED, CALL_CLOSED ...)."""
        assert self.sock is not None
        for event in self.events:
            if event.get("type") == kind:
                self.events.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            self.buffer += chunk
            while b":" in self.buffer:
                length, _, rest = self.buffer.partition(b":")
                size = int(length)
                if len(rest) < size + 1:
                    break
                payload, self.buffer = rest[:size], rest[size + 1:]
                message = json.loads(payload)
                if message.get("event"):
                    if message.get("type") == kind:
                        return dict(message)
                    self.events.append(message)
        raise AssertionError(f"baresip: no {kind} within {timeout}s; saw {self.events}")

    def heard(self) -> Path | None:
        """The WAV of what this phone decoded (its one call), once sndfile opened it."""
        found = sorted(self.dir.glob("dump-*-dec.wav"))
        return found[-1] if found else None

    def command(self, command: str, params: str = "") -> None:
        """Send a ctrl_tcp command (netstring JSON)."""
        assert self.sock is not None
        body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")

    def stop(self) -> None:
        """Quit and reap (by this instance's pid)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.command("quit")
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class PyVoipPhone:
    """A pyVoIP 1.6.8 phone that registers with digest and answers every call."""

    def __init__(self, user: str, password: str, registrar_port: int,
                 freq: float | None = None) -> None:
        """``freq``: once answered, send that tone and keep what is heard in :attr:`heard`
        (8 kHz 8-bit unsigned linear, pyVoIP's audio format)."""
        from pyVoIP.VoIP import CallState, VoIPPhone

        self.answered = 0
        self.ended = 0
        self.heard = bytearray()
        self._state = CallState

        def on_call(call: Any) -> None:
            try:
                call.answer()
                self.answered += 1
                if freq is not None:
                    n = 8000 * 120
                    tone = (128 + 60 * _sine(freq, n)).astype("uint8")
                    call.write_audio(tone.tobytes())
                while call.state == CallState.ANSWERED:
                    if freq is None:
                        time.sleep(0.05)
                        continue
                    self.heard += call.read_audio(160, blocking=False)
                    time.sleep(0.02)
            except Exception:  # pyVoIP raises when the far end hangs up mid-answer
                pass
            self.ended += 1

        rtp = free_port()
        self.phone = VoIPPhone("127.0.0.1", registrar_port, user, password,
                               callCallback=on_call, myIP="127.0.0.1", sipPort=free_port(),
                               rtpPortLow=rtp, rtpPortHigh=rtp + 20)
        self.phone.start()

    def stop(self) -> None:
        """Stop its threads (deregisters)."""
        with contextlib.suppress(Exception):
            self.phone.stop()


def _sine(freq: float, n: int) -> Any:
    import numpy as np

    return np.sin(2 * np.pi * freq * np.arange(n) / 8000)
