"""Sound cards and PTT/COS control lines for radios wired to a computer.

Theory of operation
-------------------
A sound-card radio is an analogue radio whose speaker and microphone go to a
sound card and whose PTT and squelch (COS, carrier-operated switch) go to the
modem-control lines of a serial port: we drive RTS or DTR to key it, and read
CTS or DCD to know it is receiving.

Two injected interfaces keep the radio logic testable:

* :class:`AudioDevice` moves 20 ms frames of 8 kHz mono s16le PCM (320 bytes)
  both ways.  :class:`PyAudioDevice` is the real one: PortAudio through
  pyaudio (imported only here and only when opened, so the package installs
  without PortAudio), at the card's own rate, resampled to and from 8 kHz by
  :class:`Resampler`.  PortAudio calls back on its own thread: input frames
  are handed to the loop with ``call_soon_threadsafe``; output frames wait in
  a bounded queue the output callback drains (silence when it is empty).
* :class:`ControlLines` sets PTT and reads COS.  :class:`SerialControlLines`
  is the real one, through pyserial's ``serial_for_url`` (a local
  ``/dev/ttyUSB0``, or an ``rfc2217://`` network serial server).  PTT is
  dropped the moment the port opens (start-up reconciliation) and on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "AudioDevice", "ControlLines", "FRAME_BYTES", "PyAudioDevice", "Resampler",
    "SerialControlLines", "SoundcardError",
]

log = logging.getLogger(__name__)

RATE = 8000
FRAME_SAMPLES = 160
FRAME_BYTES = FRAME_SAMPLES * 2
SUPPORTED_RATES = (8000, 16000, 24000, 32000, 48000)
OUTPUT_QUEUE = 5  # frames (100 ms): a late consumer loses old audio, never adds delay
TAPS = 63


class SoundcardError(OSError):
    """A sound card or control line that cannot be opened or used."""


class AudioDevice(Protocol):
    """20 ms frames of 8 kHz mono s16le PCM in and out of one sound card."""

    def open(self, on_frame: Callable[[bytes], None]) -> None:
        """Start capturing; each captured 320-byte frame goes to ``on_frame`` on the loop."""

    def write(self, frame: bytes) -> None:
        """Queue one 320-byte frame for playback (the radio's microphone input)."""

    def close(self) -> None:
        """Stop both directions (idempotent)."""


class ControlLines(Protocol):
    """PTT output and COS input of one radio interface."""

    def open(self) -> None:
        """Open the port and drop PTT; :class:`SoundcardError` if it cannot be used."""

    def set_ptt(self, on: bool) -> None:
        """Key (True) or unkey (False) the radio; :class:`SoundcardError` on failure."""

    def cos(self) -> bool | None:
        """True while the radio's squelch is open; None when no COS line is wired."""

    def close(self) -> None:
        """Drop PTT and close (idempotent, never raises)."""


def _lowpass(cutoff: float) -> npt.NDArray[np.float64]:
    """A Hamming-windowed sinc low-pass, ``cutoff`` as a fraction of the sampling rate."""
    n = np.arange(TAPS) - (TAPS - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(TAPS)
    taps: npt.NDArray[np.float64] = h / h.sum()
    return taps


class Resampler:
    """Streams int16 audio between ``rate`` and 8 kHz by an integer factor (FIR filtered)."""

    def __init__(self, rate: int, *, up: bool) -> None:
        """``up``: 8 kHz -> ``rate``; otherwise ``rate`` -> 8 kHz."""
        if rate not in SUPPORTED_RATES:
            raise SoundcardError(f"sound card rate {rate} Hz is not supported: use one of "
                                 f"{', '.join(map(str, SUPPORTED_RATES))}")
        self.factor = rate // RATE
        self.up = up
        self._taps = _lowpass(0.45 / self.factor)
        self._history = np.zeros(TAPS - 1, dtype=np.float64)
        self._phase = 0

    def __call__(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Resample one chunk; chunks join without clicks (the filter keeps its state)."""
        k = self.factor
        if k == 1:
            return pcm
        x = pcm.astype(np.float64)
        if self.up:
            stuffed = np.zeros(len(x) * k, dtype=np.float64)
            stuffed[::k] = x * k
            x = stuffed
        full = np.concatenate([self._history, x])
        self._history = full[-(TAPS - 1):]
        y = np.convolve(full, self._taps, mode="valid")
        if not self.up:
            y = y[self._phase::k]
            self._phase = (self._phase - len(x)) % k
        return np.clip(np.round(y), -32768, 32767).astype(np.int16)


class PyAudioDevice:
    """A PortAudio sound card through pyaudio (see the module docstring)."""

    def __init__(self, *, rate: int = RATE, input_device: int | None = None,
                 output_device: int | None = None) -> None:
        """Describe the card; nothing is opened until :meth:`open` (on the loop)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rate = rate
        self._down = Resampler(rate, up=False)
        self._up = Resampler(rate, up=True)
        self.input_device, self.output_device = input_device, output_device
        self._out: deque[bytes] = deque(maxlen=OUTPUT_QUEUE)
        self._pending = np.zeros(0, dtype=np.int16)
        self._lock = threading.Lock()
        self._pa: Any = None
        self._streams: list[Any] = []
        self._on_frame: Callable[[bytes], None] | None = None
        self.counters = dict.fromkeys(("in_frames", "out_frames", "out_underruns"), 0)

    def open(self, on_frame: Callable[[bytes], None]) -> None:
        """Open the capture and playback streams; :class:`SoundcardError` if PortAudio fails."""
        try:
            pyaudio: Any = importlib.import_module("pyaudio")  # the optional extra [audio]
        except ImportError as exc:
            raise SoundcardError("pyaudio is not installed: apt-get install portaudio19-dev "
                                 "and pip install 'dispatchd[audio]'") from exc
        self._on_frame = on_frame
        self._loop = asyncio.get_running_loop()
        chunk = FRAME_SAMPLES * self._up.factor
        try:
            self._pa = pyaudio.PyAudio()
            self._check_devices(self._pa.get_device_count())
            common = {"format": pyaudio.paInt16, "channels": 1, "rate": self.rate,
                      "frames_per_buffer": chunk}
            self._streams = [
                self._pa.open(input=True, input_device_index=self.input_device,
                              stream_callback=self._captured, **common),
                self._pa.open(output=True, output_device_index=self.output_device,
                              stream_callback=self._playback, **common)]
        except Exception as exc:  # PortAudio raises OSError or IOError with a code
            self.close()
            raise SoundcardError(f"sound card: {exc}") from exc

    def _check_devices(self, count: int) -> None:
        """PortAudio crashes the process on a device index it does not have: refuse it first."""
        for which, index in (("input", self.input_device), ("output", self.output_device)):
            if index is not None and not 0 <= index < count:
                raise SoundcardError(f"no {which} device {index}: PortAudio sees {count} "
                                     "device(s)")

    def _captured(self, data: bytes | None, count: int, info: Any, status: int) -> tuple[None, int]:
        """PortAudio's thread: resample, cut into frames, hand each to the loop."""
        if data:
            pcm = self._down(np.frombuffer(data, dtype="<i2").astype(np.int16))
            with self._lock:
                pcm = np.concatenate([self._pending, pcm])
                whole = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
                self._pending = pcm[whole:]
            loop = self._loop
            for i in range(0, whole, FRAME_SAMPLES):
                frame = pcm[i:i + FRAME_SAMPLES].astype("<i2").tobytes()
                self.counters["in_frames"] += 1
                if loop is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is closing
                        loop.call_soon_threadsafe(self._deliver, frame)
        return None, 0  # paContinue

    def _deliver(self, frame: bytes) -> None:
        if self._on_frame is not None:
            self._on_frame(frame)

    def _playback(self, data: Any, count: int, info: Any, status: int) -> tuple[bytes, int]:
        """PortAudio's thread: the next queued frame, or silence."""
        try:
            frame = self._out.popleft()
        except IndexError:
            self.counters["out_underruns"] += 1
            return bytes(count * 2), 0
        return frame, 0

    def write(self, frame: bytes) -> None:
        """Resample one frame to the card's rate and queue it (oldest dropped when full)."""
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"a frame is {FRAME_BYTES} bytes, not {len(frame)}")
        pcm = self._up(np.frombuffer(frame, dtype="<i2").astype(np.int16))
        self._out.append(pcm.astype("<i2").tobytes())
        self.counters["out_frames"] += 1

    def close(self) -> None:
        """Stop and close both streams and PortAudio."""
        self._on_frame = None
        streams, self._streams = self._streams, []
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.stop_stream()
                stream.close()
        if self._pa is not None:
            with contextlib.suppress(Exception):
                self._pa.terminate()
            self._pa = None


PttLine = Literal["rts", "dtr"]
CosLine = Literal["cts", "dcd", "none"]


class SerialControlLines:
    """PTT on RTS or DTR, COS on CTS or DCD, through pyserial (see the module docstring)."""

    def __init__(self, device: str, *, ptt: PttLine = "rts", cos: CosLine = "cts",
                 cos_active_low: bool = False) -> None:
        """Describe the lines; nothing is opened until :meth:`open`."""
        self.device, self.ptt_line, self.cos_line = device, ptt, cos
        self.cos_active_low = cos_active_low
        self._port: Any = None

    def open(self) -> None:
        """Open the port and drop PTT at once (a radio is never left keyed from before)."""
        import serial

        try:
            port = serial.serial_for_url(self.device, do_not_open=True)
            port.rts = False  # set before open: pyserial applies them as it opens
            port.dtr = False
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SoundcardError(f"{self.device}: cannot open: {exc}") from exc
        self._port = port
        try:
            self.set_ptt(False)
            self.cos()
        except SoundcardError as exc:
            self.close()
            raise SoundcardError(f"{self.device} has no usable modem control lines "
                                 f"(a pty or a USB adapter without RTS/CTS?): {exc}") from exc

    def set_ptt(self, on: bool) -> None:
        """Drive the PTT line."""
        if self._port is None:
            raise SoundcardError(f"{self.device} is not open")
        try:
            setattr(self._port, self.ptt_line, on)
        except (OSError, ValueError) as exc:  # SerialException is an OSError
            raise SoundcardError(f"{self.device}: {self.ptt_line.upper()}: {exc}") from exc

    def cos(self) -> bool | None:
        """Read the COS line (None when none is wired)."""
        if self.cos_line == "none":
            return None
        if self._port is None:
            raise SoundcardError(f"{self.device} is not open")
        try:
            level = bool(self._port.cts if self.cos_line == "cts" else self._port.cd)
        except (OSError, ValueError) as exc:
            raise SoundcardError(f"{self.device}: {self.cos_line.upper()}: {exc}") from exc
        return level != self.cos_active_low

    def close(self) -> None:
        """Drop PTT, then close."""
        port, self._port = self._port, None
        if port is None:
            return
        with contextlib.suppress(Exception):
            setattr(port, self.ptt_line, False)
        with contextlib.suppress(Exception):
            port.close()
