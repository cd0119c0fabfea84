"""Keying a patched radio with SIP INFO from a real SIP peer, through the B2BUA.

An in-process daemon (SIP, media, one sound-card radio on a frame-fed test card)
takes a 119 call from a SIPp trunk; SIPp plays the dispatcher's phone: it
answers, then sends in-dialog INFO ``PTT: on`` / ``PTT: off`` and
``application/dtmf-relay`` ``*7`` / ``*8``, each answered 200 by us (not relayed
to the caller), and hangs up.  The radio's PTT line must follow.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from soundcardpeers import FrameAudio, Lines

from dispatch import radio_service
from dispatch.config import load_settings
from dispatch.daemon import Daemon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "b2bua"))
from b2bua_helpers import (  # noqa: E402
    BASE_TELEPHONY,
    DOMAIN,
    PASSWORD,
    ROOT,
    SippServer,
    env,
    errors,
    free_port,
    register_agents,
)
from test_b2bua_sipp import call, trunk, uas_done  # noqa: E402


class InProcessSip:
    """What the b2bua helpers need of a daemon: its SIP port."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.port = int(daemon.sip.endpoint.bound[0].port)
        self.seen: list[Any] = []
        daemon.hub.listen(lambda envelope: self.seen.append(envelope.event))


@pytest_asyncio.fixture(loop_scope="session")
async def sip_radio(tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch
                    ) -> AsyncIterator[tuple[InProcessSip, Lines, int]]:
    card_lines = Lines()
    monkeypatch.setattr(radio_service, "SOUND_CARDS",
                        [lambda gw: FrameAudio(card_lines), lambda gw: card_lines])
    for key, value in env().items():
        if key != "PYTHONPATH":
            monkeypatch.setenv(key, value)
    carrier = free_port()
    media_port = 32000 + 2 * (free_port() % 1500)
    config = tmp_path / "dispatchd.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "var"}"\n[http]\nport = 0\n'
        f'[ssh]\nenabled = false\n[log]\nlevel = "info"\n'
        f'[sip]\nenabled = true\ndomain = "{DOMAIN}"\nagent_login_on_register = true\n'
        f'listen = [{{transport = "udp", host = "127.0.0.1", port = 0}}]\n'
        f'session_expires = 90\n[sip.registrar]\nrate = 1000.0\nburst = 1000.0\n'
        f'{BASE_TELEPHONY}\n[[agents]]\nid = "alice"\nqueues = ["fire"]\n{trunk(carrier)}\n'
        f'[media]\nenabled = true\nport_min = {media_port}\nport_max = {media_port + 99}\n'
        f'recordings_dir = "{tmp_path / "rec"}"\nprompts_dir = "{ROOT / "conf" / "prompts"}"\n'
        '[[radio.gateways]]\nname = "sc1"\nkind = "soundcard"\ndevice = "/dev/ttyUSB0"\n'
        'hang_time_s = 0.0\n[radio.gateways.soundcard]\naudio_rate = 8000\n'
        '[[radio.talkgroups]]\nname = "fire"\ngssi = "1"\ngateway = "sc1"\n')
    done = subprocess.run(
        [sys.executable, "-m", "dispatch.cli", "sip", "account", "add", "alice", "-c",
         str(config)], input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT,
        timeout=60, env={**os.environ, **env()})
    assert done.returncode == 0, done.stderr
    daemon = Daemon(load_settings(config), reactor=reactor)
    await daemon.start()
    try:
        yield InProcessSip(daemon), card_lines, carrier
    finally:
        await daemon.stop()


async def test_sip_info_from_the_dispatchers_phone_keys_and_unkeys(
        sip_radio: tuple[InProcessSip, Lines, int], tmp_path: Path) -> None:
    sip, lines, carrier = sip_radio
    daemon = sip.daemon
    agent_port = free_port()
    agent = SippServer("agent_ptt_info.xml", agent_port, tmp_path)
    try:
        code, out = await register_agents(sip, tmp_path, {"alice": agent_port})  # type: ignore[arg-type]
        assert code == 0, out + errors(tmp_path)
        caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml",  # type: ignore[arg-type]
                                            "119", carrier))
        engine = daemon.media.engine  # type: ignore[union-attr]
        for _ in range(1500):
            rooms = engine.rooms()
            if rooms and len(next(iter(rooms.values()))) == 2:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"no answered call: {engine.rooms()} {errors(tmp_path)}")
        room, legs = next(iter(engine.rooms().items()))
        await daemon.patches.patch("fire", "disp", call=room)  # the agent waits 3 s first
        code, out = await caller
        assert code == 0, out + errors(tmp_path)
        await uas_done(tmp_path, agent_port)
    finally:
        agent.stop()
    assert True in lines.history, "INFO PTT: on never keyed the radio"
    keyed = [state for state in lines.history if state is True]
    assert len(keyed) == 2  # once by "PTT: on", once by dtmf-relay *7
    assert lines.ptt is False
    floor = [(e.event, e.who) for e in sip.seen if type(e).__name__ == "RadioFloorChanged"]
    agent_leg = legs[1]  # the caller's leg joined the room first
    assert floor == [("granted", f"leg:{agent_leg}"), ("released", f"leg:{agent_leg}")] * 2
    for _ in range(500):  # the call's release takes the radio out of its room
        if not daemon.patches.describe() and not engine.rooms():
            break
        await asyncio.sleep(0.01)
    assert daemon.patches.describe() == {}
    # Every leg's media is freed, the hanging-up agent's too (its ports used to leak).
    assert engine.rooms() == {} and engine.health()["legs"] == 0
    unpatched = [e for e in sip.seen if type(e).__name__ == "RadioPatchChanged"]
    assert [(e.state, e.who) for e in unpatched] == [("patched", "disp"), ("unpatched", "system")]
