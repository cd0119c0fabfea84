"""The streaming WAV writer: readable with stdlib ``wave`` at every header update and after repair."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from telephony.media.wav import HEADER_SIZE, WavWriter, repair_wav


def block(tick: int) -> np.ndarray:
    return np.full((160, 2), [tick, -tick], dtype=np.int16)


def read(buf: bytes) -> tuple[int, int, int, np.ndarray]:
    with wave.open(io.BytesIO(buf), "rb") as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        return w.getnchannels(), w.getframerate(), w.getsampwidth(), frames


def test_round_trip_after_close() -> None:
    f = io.BytesIO()
    syncs = []
    writer = WavWriter(f, header_every=10, sync=lambda: syncs.append(1))
    for tick in range(25):
        writer.write(block(tick))
    writer.close()
    channels, rate, width, frames = read(f.getvalue())
    assert (channels, rate, width) == (2, 8000, 2)
    assert frames.shape == (25 * 160, 2)
    assert frames[160 * 7, 0] == 7 and frames[160 * 7, 1] == -7
    assert len(syncs) == 3  # after ticks 10 and 20, and at close


def test_crash_leaves_readable_file_up_to_last_header() -> None:
    f = io.BytesIO()
    writer = WavWriter(f, header_every=10)
    for tick in range(27):
        writer.write(block(tick))
    crashed = f.getvalue()  # no close(): the process died here
    _, _, _, frames = read(crashed)
    assert frames.shape == (20 * 160, 2)
    torn = bytearray(crashed + b"\x01\x02\x03")  # half a frame from the interrupted write
    g = io.BytesIO(bytes(torn))
    assert repair_wav(g) == 27 * 160 * 4
    _, _, _, frames = read(g.getvalue())
    assert frames.shape == (27 * 160, 2) and frames[-1, 0] == 26


def test_empty_recording_is_valid() -> None:
    f = io.BytesIO()
    WavWriter(f)
    assert len(f.getvalue()) == HEADER_SIZE
    assert read(f.getvalue())[3].shape == (0, 2)


def test_rejects_bad_blocks_and_writes_after_close() -> None:
    writer = WavWriter(io.BytesIO())
    with pytest.raises(ValueError):
        writer.write(np.zeros((160, 1), dtype=np.int16))
    with pytest.raises(ValueError):
        writer.write(np.zeros((160, 2), dtype=np.int32))  # type: ignore[arg-type]
    writer.close()
    with pytest.raises(ValueError):
        writer.write(block(0))
    with pytest.raises(ValueError):
        repair_wav(io.BytesIO(b"RIFF"))


def test_mixer_recording_feeds_the_writer() -> None:
    from telephony.media.mixer import Channel, LegConfig, Mixer

    m = Mixer()
    m.add_leg("caller", LegConfig("c", channel=Channel.CALLER))
    m.add_leg("taker", LegConfig("c", channel=Channel.CALL_TAKER))
    m.set_recording("c", True)
    f = io.BytesIO()
    writer = WavWriter(f)
    for _ in range(3):
        rec = m.mix({"caller": np.full(160, 100, np.int16), "taker": np.full(160, -5, np.int16)}).recordings
        writer.write(rec["c"])
    writer.close()
    frames = read(f.getvalue())[3]
    assert frames.shape == (480, 2) and (frames[:, 0] == 100).all() and (frames[:, 1] == -5).all()
