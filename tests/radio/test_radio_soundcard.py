"""The sound-card radio gateway: keying, the on-air window, COS and VOX squelch, fail-safe,
resampling, and pyserial's control lines on a real pty and on pyserial's loopback."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import sys
import threading
import tty
from pathlib import Path

import numpy as np
import pytest
from soundcardpeers import FrameAudio, Lines, pcm_of, tone_frames

from hardware.soundcard import Resampler, SerialControlLines, SoundcardError
from radio import floor
from radio.floor import FloorSettings, Priority
from radio.soundcard import SoundcardGateway, SoundcardSettings, Vox
from radio.tetra import LinkDown, LinkUp, RadioKeyed, RadioUnkeyed, TalkerChanged

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "media"))
from enginepeers import assert_hears, until  # noqa: E402


class Rig:
    """A gateway on test lines and a frame-fed sound card, with every event it reported."""

    def __init__(self, cos: bool | None = False, hang_s: float = 0.0) -> None:
        self.lines = Lines()
        self.lines.squelch_open = cos
        self.audio = FrameAudio(self.lines)
        self.events: list[object] = []
        self.heard: list[bytes] = []
        self.gw = SoundcardGateway(
            SoundcardSettings("sc1", "7", vox_threshold_dbfs=-30.0, vox_hang_s=0.1,
                              floor=FloorSettings(hang_time_s=hang_s, tx_timeout_s=30.0),
                              retry_s=0.01),
            self.audio, self.lines, self.events.append)
        self.gw.attach(self.heard.append)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


async def test_key_transmit_only_on_air_and_unkey() -> None:
    rig = Rig()
    await rig.gw.start()
    assert rig.lines.history == [False] and isinstance(rig.events[0], LinkUp)
    for frame in tone_frames(1000.0, 5):
        rig.gw.transmit(frame)  # not keyed: nothing may reach the radio
    assert rig.audio.played == [] and rig.gw.counters["tx_dropped"] == 5

    events = rig.gw.request_ptt("7", "disp", Priority.DISPATCHER)
    assert [type(e) for e in events] == [floor.FloorGranted]
    assert rig.lines.ptt is True and rig.gw.keyed
    assert isinstance(rig.events[-1], RadioKeyed)
    for frame in tone_frames(1000.0, 50):
        rig.gw.transmit(frame)
    assert_hears(pcm_of(rig.audio.played), [1000.0], [600.0])

    rig.gw.release_ptt("7", "disp")
    assert rig.lines.ptt is False and isinstance(rig.events[-1], RadioUnkeyed)
    rig.gw.transmit(tone_frames(1000.0, 1)[0])
    assert len(rig.audio.played) == 50 and rig.audio.played_unkeyed == 0
    await rig.gw.stop()
    assert rig.lines.ptt is False


async def test_cos_opens_the_receive_path_and_half_duplex_mutes_it_while_keyed() -> None:
    rig = Rig(cos=False)
    await rig.gw.start()
    rig.audio.capture(tone_frames(700.0, 10))  # squelch closed: noise stays out
    assert rig.heard == []
    rig.lines.squelch_open = True
    rig.audio.capture(tone_frames(700.0, 60))
    assert_hears(pcm_of(rig.heard), [700.0], [1000.0])
    talkers = [e.talker for e in rig.events if isinstance(e, TalkerChanged)]
    assert talkers == ["cos"]
    rig.gw.request_ptt("7", "disp", Priority.DISPATCHER)  # our own carrier must not loop back
    rig.audio.capture(tone_frames(700.0, 10))
    assert len(rig.heard) == 60
    assert [e.talker for e in rig.events if isinstance(e, TalkerChanged)] == ["cos", None]
    rig.gw.release_ptt("7", "disp")
    rig.lines.squelch_open = False
    rig.audio.capture(tone_frames(700.0, 3))
    assert len(rig.heard) == 60
    await rig.gw.stop()


async def test_vox_when_no_cos_line_is_wired() -> None:
    rig = Rig(cos=None)
    await rig.gw.start()
    quiet = tone_frames(700.0, 10, amplitude=100.0)  # -50 dBFS: below the -30 dBFS threshold
    rig.audio.capture(quiet)
    assert rig.heard == []
    rig.audio.capture(tone_frames(700.0, 20))
    assert len(rig.heard) == 20
    assert [e.talker for e in rig.events if isinstance(e, TalkerChanged)] == ["vox"]
    await rig.gw.stop()


def test_vox_hang_time_on_a_stepped_clock() -> None:
    vox = Vox(-30.0, hang_s=0.1)
    loud, quiet = tone_frames(700.0, 1)[0], tone_frames(700.0, 1, amplitude=50.0)[0]
    assert vox.feed(quiet, 0.0) is False
    assert vox.feed(loud, 1.0) is True
    assert vox.feed(quiet, 1.06) is True  # hang time holds the squelch over a pause
    assert vox.feed(quiet, 1.09) is True
    assert vox.feed(quiet, 1.12) is False


async def test_a_lost_port_while_keyed_leaves_nothing_keyed() -> None:
    rig = Rig()
    await rig.gw.start()
    rig.gw.request_ptt("7", "disp", Priority.DISPATCHER)
    assert rig.lines.ptt is True
    rig.lines.fail = True
    rig.lines.squelch_open = True
    rig.audio.capture(tone_frames(700.0, 1))  # the next COS read fails: the adapter is gone
    assert any(isinstance(e, LinkDown) for e in rig.events)
    assert any(isinstance(e, floor.FloorRevoked) for e in rig.events)
    assert not rig.gw.keyed
    for frame in tone_frames(1000.0, 3):
        rig.gw.transmit(frame)
    assert rig.audio.played == []
    denied = rig.gw.request_ptt("7", "disp", Priority.DISPATCHER)
    assert [type(e) for e in denied] == [floor.FloorDenied]
    rig.lines.fail = False  # the USB adapter is plugged back: reopened, PTT dropped first
    await until(lambda: isinstance(rig.events[-1], LinkUp), "the gateway reopened")
    assert rig.lines.opened == 2 and rig.lines.history[-1] is False
    assert [type(e) for e in rig.gw.request_ptt("7", "disp", Priority.DISPATCHER)] == [
        floor.FloorGranted]
    await rig.gw.stop()
    assert rig.lines.ptt is False


async def test_ptt_failure_at_keying_is_a_fault_and_a_loss() -> None:
    rig = Rig()
    await rig.gw.start()
    rig.lines.fail = True
    rig.gw.request_ptt("7", "disp", Priority.DISPATCHER)
    assert not rig.gw.keyed and "GatewayFault" in rig.kinds()
    await asyncio.sleep(0)  # the loss is reported on the next loop turn
    assert "LinkDown" in rig.kinds() and not rig.gw.floor.keyed()
    await rig.gw.stop()  # stops the reopen attempts too
    assert rig.gw._reopen is None


async def test_a_stop_revokes_and_unkeys() -> None:
    rig = Rig()
    await rig.gw.start()
    rig.gw.request_ptt("7", "disp", Priority.DISPATCHER)
    await rig.gw.stop()
    assert rig.lines.ptt is False and any(isinstance(e, RadioUnkeyed) for e in rig.events)
    assert any(isinstance(e, floor.FloorRevoked) for e in rig.events)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_resampling_keeps_the_tone_and_removes_what_8khz_cannot_carry(rate: int) -> None:
    down, up = Resampler(rate, up=False), Resampler(rate, up=True)
    t = np.arange(rate) / rate
    card = np.round(6000 * np.sin(2 * np.pi * 1000 * t) + 6000 * np.sin(2 * np.pi * 5500 * t)
                    ).astype(np.int16)
    chunk = rate // 50
    out = np.concatenate([down(card[i:i + chunk]) for i in range(0, len(card), chunk)])
    assert len(out) == 8000
    # 5.5 kHz cannot exist at 8 kHz: it must be filtered, not folded onto 2.5 kHz.
    assert_hears(out[400:], [1000.0], [2500.0])
    back = np.concatenate([up(out[i:i + 160]) for i in range(0, len(out), 160)])
    assert len(back) == rate
    spectrum = np.abs(np.fft.rfft(back[rate // 10:].astype(np.float64)))
    freqs = np.fft.rfftfreq(len(back) - rate // 10, 1 / rate)
    assert abs(freqs[int(np.argmax(spectrum))] - 1000.0) < 5


def test_an_unsupported_card_rate_is_one_clear_error() -> None:
    with pytest.raises(SoundcardError, match="44100 Hz is not supported"):
        Resampler(44100, up=False)


def test_a_pty_has_no_control_lines_and_says_so() -> None:
    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        lines = SerialControlLines(os.ttyname(slave), ptt="rts", cos="cts")
        with pytest.raises(SoundcardError, match="no usable modem control lines"):
            lines.open()
    finally:
        os.close(master)
        os.close(slave)


def test_pyserial_drives_rts_and_reads_it_back_as_cts_on_its_loopback() -> None:
    lines = SerialControlLines("loop://", ptt="rts", cos="cts")
    lines.open()
    assert lines.cos() is False  # PTT dropped on open
    lines.set_ptt(True)
    assert lines.cos() is True
    lines.close()
    with pytest.raises(SoundcardError, match="not open"):
        lines.set_ptt(True)
    missing = SerialControlLines("/dev/ttyUSB-none", ptt="dtr", cos="dcd")
    with pytest.raises(SoundcardError, match="cannot open"):
        missing.open()


async def test_pyaudio_device_callbacks_hand_frames_across_threads() -> None:
    """PortAudio calls back on its own thread: 48 kHz capture becomes 8 kHz frames on the
    loop; playback drains what the gateway wrote, upsampled, and plays silence when empty."""
    from hardware.soundcard import PyAudioDevice

    card = PyAudioDevice(rate=48000)
    got: list[bytes] = []
    card._loop = asyncio.get_running_loop()  # what open() does before starting the streams
    card._on_frame = got.append
    t = np.arange(48000) / 48000
    pcm = np.round(6000 * np.sin(2 * np.pi * 900 * t)).astype("<i2")

    def portaudio_thread() -> None:
        for i in range(0, len(pcm), 1000):  # odd-sized buffers: frames must still be whole
            card._captured(pcm[i:i + 1000].tobytes(), 1000, None, 0)

    worker = threading.Thread(target=portaudio_thread)
    worker.start()
    await asyncio.get_running_loop().run_in_executor(None, worker.join)
    await until(lambda: len(got) == 50, "50 frames on the loop")
    assert all(len(f) == 320 for f in got)
    assert_hears(pcm_of(got[2:]), [900.0], [2000.0])

    for frame in tone_frames(900.0, 8):
        card.write(frame)  # 8 queued, only the newest 5 kept: no delay builds up
    played = [card._playback(None, 960, None, 0)[0] for _ in range(6)]
    assert [len(p) for p in played] == [1920] * 6
    assert played[-1] == bytes(1920) and card.counters["out_underruns"] == 1
    with pytest.raises(ValueError):
        card.write(b"\x00" * 100)


async def test_a_device_index_portaudio_lacks_is_refused_before_it_crashes() -> None:
    """PortAudio segfaults on an out-of-range device index: we must refuse it ourselves."""
    import pyaudio

    from hardware.soundcard import PyAudioDevice

    pa = pyaudio.PyAudio()
    try:
        devices = pa.get_device_count()
    finally:
        pa.terminate()
    card = PyAudioDevice(rate=8000, input_device=devices + 5)
    with pytest.raises(SoundcardError, match=f"no input device {devices + 5}"):
        card.open(lambda frame: None)
    card.close()


def _radio(gateway: dict[str, object], talkgroups: list[dict[str, str]]) -> dict[str, object]:
    return {"radio": {"gateways": [gateway], "talkgroups": talkgroups}}


@pytest.mark.parametrize(("gateway", "talkgroups", "message"), [
    ({"name": "sc1", "kind": "soundcard", "device": "/dev/ttyUSB0"}, [],
     "radio.gateways.soundcard] is needed by"),
    ({"name": "t1", "kind": "tetra", "device": "/dev/ttyUSB0", "soundcard": {}},
     [{"name": "f", "gssi": "1", "gateway": "t1"}], "only allowed for"),
    ({"name": "sc1", "kind": "soundcard", "device": "/dev/ttyUSB0", "soundcard": {}},
     [{"name": "a", "gssi": "1", "gateway": "sc1"}, {"name": "b", "gssi": "2", "gateway": "sc1"}],
     "carries one talkgroup only"),
    ({"name": "sc1", "kind": "soundcard", "device": "/dev/ttyUSB0",
      "soundcard": {"ptt_line": "cts"}}, [], "soundcard.ptt_line"),
    ({"name": "sc1", "kind": "soundcard", "device": "/dev/ttyUSB0",
      "soundcard": {"audio_input": -1}}, [], "soundcard.audio_input"),
    ({"name": "sc1", "kind": "soundcard", "soundcard": {}}, [], "needs device"),
])
def test_soundcard_settings_refused_with_one_clear_line(
        gateway: dict[str, object], talkgroups: list[dict[str, str]], message: str) -> None:
    from dispatch.config import ConfigError, parse_settings

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_settings(_radio(gateway, talkgroups), "test.toml")
    ok = {"name": "sc1", "kind": "soundcard", "device": "/dev/ttyUSB0",
          "soundcard": {"cos_line": "none", "audio_rate": 16000}}
    settings = parse_settings(_radio(ok, [{"name": "f", "gssi": "1", "gateway": "sc1"}]), "t")
    assert settings.radio.gateways[0].soundcard is not None
    assert settings.radio.gateways[0].soundcard.cos_line == "none"
