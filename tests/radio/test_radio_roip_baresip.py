"""A real peer as a VOX RoIP box: baresip answers dispatchd's call and plays a tone file as
the radio's received audio; dispatchd's VOX opens the squelch and hands the tone to the
talkgroup; keyed, dispatchd's own tone reaches baresip (its decoded-audio dump), and a stop
hangs the call up."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
from soundcardpeers import pcm_of, tone_frames

from radio.floor import FloorSettings, Priority
from radio.roip import RoipGateway, RoipSettings
from radio.tetra import LinkUp, TalkerChanged
from telephony.roip_link import open_link

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "b2bua"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "media"))
from b2bua_helpers import free_port, need  # noqa: E402
from enginepeers import assert_hears, until  # noqa: E402
from softphones import Baresip, tone_wav  # noqa: E402


class RadioBox(Baresip):
    """baresip as a RoIP box: registered nowhere, auto-answering, its tone the "radio"."""

    def __init__(self, tmp: Path, freq: float = 700.0) -> None:  # noqa: D107 (not Baresip's)
        self.dir = tmp / "baresip-radio"
        self.dir.mkdir()
        self.sip_port = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        wav = tone_wav(self.dir / "tone.wav", 60.0, freq)
        (self.dir / "config").write_text("\n".join([
            f"sip_listen 127.0.0.1:{self.sip_port}", "net_interface 127.0.0.1",
            f"audio_source aufile,{wav}", "audio_player aubridge,nil",
            "module_path /usr/lib/baresip/modules", "module g711.so", "module aufile.so",
            "module aubridge.so", "module sndfile.so", f"snd_path {self.dir}",
            "module_app account.so", "module_app menu.so", "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}", ""]))
        (self.dir / "accounts").write_text(
            f"<sip:radio@127.0.0.1:{self.sip_port}>;regint=0;answermode=auto;"
            "audio_codecs=PCMU\n")
        self.proc = subprocess.Popen([need("baresip"), "-f", str(self.dir)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.events: list[dict[str, Any]] = []


def _dump(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


async def test_baresip_as_a_vox_roip_box(tmp_path: Path) -> None:
    box = RadioBox(tmp_path)
    events: list[object] = []
    heard: list[bytes] = []
    gw: RoipGateway | None = None
    try:
        await asyncio.get_running_loop().run_in_executor(None, box.connect)
        gw = RoipGateway(RoipSettings(
            "baresip", "3", uri=f"sip:radio@127.0.0.1:{box.sip_port}", ptt="vox", cos="vox",
            keepalive_s=1.0, vox_threshold_dbfs=-40.0, vox_hang_s=0.2,
            floor=FloorSettings(hang_time_s=0.0, tx_timeout_s=30.0)), events.append,
            link_factory=open_link)
        gw.attach(heard.append)
        await gw.start()
        assert isinstance(events[0], LinkUp) and gw.health()["call"] is True

        # baresip's tone is the radio's received audio: VOX opens, the group hears it.
        await until(lambda: len(heard) >= 100, "the box's audio through the VOX squelch")
        assert [e.talker for e in events if isinstance(e, TalkerChanged)][0] == "vox"
        assert_hears(pcm_of(heard[20:]), [700.0], [1000.0])

        # A dispatcher keys: our 1 kHz goes out on the call for 2 s, then silence.
        gw.request_ptt("3", "disp", Priority.DISPATCHER)
        assert gw.keyed
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, frame in enumerate(tone_frames(1000.0, 100)):
            gw.transmit(frame)
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
        gw.release_ptt("3", "disp")
        for _ in range(25):
            gw.transmit(bytes(320))
            await asyncio.sleep(0.02)
        assert gw.counters["tx"] == 100
        await gw.stop()
        gw = None
        await loop.run_in_executor(None, lambda: box.wait_event("CALL_CLOSED"))
        dump = box.heard()
        assert dump is not None, "baresip wrote no decoded-audio dump"
        assert_hears(_dump(dump), [1000.0], [700.0])
    finally:
        if gw is not None:
            with contextlib.suppress(Exception):
                await gw.stop()
        await asyncio.get_running_loop().run_in_executor(None, box.stop)
