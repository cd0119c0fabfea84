"""The RoIP gateway against the RoIP device emulator over real SIP/RTP UDP sockets on 127.0.0.1:
key/unkey by DTMF and by INFO, VOX both ways, COS by DTMF and INFO, the device lost while keyed,
redial with back-off, stop and start-up unkeying, and the sans-I/O helpers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from soundcardpeers import pcm_of, tone_frames

from hardware.emulators.roip import RoipDevice
from radio import floor
from radio.floor import FloorSettings, Priority
from radio.roip import DigitMatcher, RoipError, RoipGateway, RoipSettings, redial_delay
from radio.tetra import GatewayFault, LinkDown, LinkUp, RadioKeyed, RadioUnkeyed, TalkerChanged
from telephony.roip_link import RoipLinkError, open_link

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "media"))
from enginepeers import assert_hears, until  # noqa: E402


class Rig:
    """An emulated device and a gateway calling it, with every event and frame received."""

    def __init__(self, **device: Any) -> None:
        self.device = RoipDevice(**device)
        self.events: list[object] = []
        self.heard: list[bytes] = []
        self.gw: RoipGateway | None = None

    async def start(self, **settings: Any) -> RoipGateway:
        await self.device.start()
        opts: dict[str, Any] = {"ptt": self.device.ptt, "cos": self.device.cos,
                                "keepalive_s": 0.2, "request_timeout_s": 0.6,
                                "retry_s": 0.05, "retry_max_s": 0.2,
                                "vox_threshold_dbfs": -40.0, "vox_hang_s": 0.1,
                                "floor": FloorSettings(hang_time_s=0.0, tx_timeout_s=30.0)}
        opts.update(settings)
        self.gw = RoipGateway(RoipSettings("roip1", "5", uri=self.device.uri, **opts),
                              self.events.append, link_factory=open_link)
        self.gw.attach(self.heard.append)
        await self.gw.start()
        return self.gw

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    async def close(self) -> None:
        if self.gw is not None:
            await self.gw.stop()
        self.device.close()


async def _key_and_talk(rig: Rig, gw: RoipGateway) -> None:
    for frame in tone_frames(1000.0, 5):
        gw.transmit(frame)  # not keyed: nothing may reach the radio (silence only)
    events = gw.request_ptt("5", "disp", Priority.DISPATCHER)
    assert [type(e) for e in events] == [floor.FloorGranted]
    assert gw.keyed and isinstance(rig.events[-1], RadioKeyed)
    await until(lambda: rig.device.keyed, "the device keyed")
    for frame in tone_frames(1000.0, 40):
        gw.transmit(frame)
    await until(lambda: len(rig.device.heard_on_air()) >= 40 * 160, "the dispatcher on air")
    gw.release_ptt("5", "disp")
    assert not gw.keyed and isinstance(rig.events[-1], RadioUnkeyed)
    await until(lambda: not rig.device.keyed, "the device unkeyed")
    for frame in tone_frames(1000.0, 5):
        gw.transmit(frame)
    await asyncio.sleep(0.05)
    assert_hears(rig.device.heard_on_air(), [1000.0], [700.0])
    assert rig.device.loud_unkeyed() == 0  # never audio to an unkeyed radio


async def test_dtmf_keying_start_up_unkey_and_audio_only_on_air() -> None:
    rig = Rig(ptt="dtmf")
    gw = await rig.start()
    try:
        assert isinstance(rig.events[0], LinkUp) and rig.device.in_call
        await until(lambda: ("unkey", "dtmf") in rig.device.log, "the start-up unkey")
        await _key_and_talk(rig, gw)
        digits = [how for what, how in rig.device.log if what == "digit"]
        assert digits == ["#", "*", "#"]  # start-up unkey, key, unkey
    finally:
        await rig.close()


async def test_info_keying_with_configured_bodies() -> None:
    rig = Rig(ptt="info", info_key_body="PTT: 1", info_unkey_body="PTT: 0")
    gw = await rig.start(info_key_body="PTT: 1", info_unkey_body="PTT: 0")
    try:
        await until(lambda: ("unkey", "info") in rig.device.log, "the start-up unkey INFO")
        await _key_and_talk(rig, gw)
        assert [w for w, how in rig.device.log if how == "info"] == ["unkey", "key", "unkey"]
    finally:
        await rig.close()


async def test_info_refused_is_a_fault_and_the_device_is_lost() -> None:
    rig = Rig(ptt="info")
    gw = await rig.start()
    try:
        rig.device.info_key_body = "something else"  # the box stops understanding our key
        gw.request_ptt("5", "disp", Priority.DISPATCHER)
        await until(lambda: "LinkDown" in rig.kinds(), "the loss")
        assert "GatewayFault" in rig.kinds() and not gw.keyed and not gw.floor.keyed()
        assert any(isinstance(e, floor.FloorRevoked) for e in rig.events)
    finally:
        await rig.close()


async def test_vox_both_ways() -> None:
    rig = Rig(ptt="vox", cos="vox")
    gw = await rig.start()
    try:
        await rig.device.receive_over(700.0, 25)
        await until(lambda: len(rig.heard) >= 20, "the field talker's audio")
        talkers = [e.talker for e in rig.events if isinstance(e, TalkerChanged)]
        assert talkers[0] == "vox"
        await until(lambda: [e.talker for e in rig.events
                             if isinstance(e, TalkerChanged)][-1] is None,
                    "the squelch closed after the hang although RTP stopped")
        assert_hears(pcm_of(rig.heard), [700.0], [1000.0])
        assert not rig.device.keyed  # silence while unkeyed never keys a VOX box
        gw.request_ptt("5", "disp", Priority.DISPATCHER)
        for frame in tone_frames(1000.0, 20):
            gw.transmit(frame)
        await until(lambda: rig.device.keyed, "the box keyed by our voice")
        gw.release_ptt("5", "disp")
        for frame in tone_frames(1000.0, 5):
            gw.transmit(frame)  # after the release only silence goes out
        await until(lambda: not rig.device.keyed, "the box unkeyed on silence")
        assert rig.device.loud_unkeyed() == 0
    finally:
        await rig.close()


@pytest.mark.parametrize("cos", ["dtmf", "info"])
async def test_cos_signalled_by_the_device(cos: str) -> None:
    rig = Rig(ptt="dtmf", cos=cos)
    gw = await rig.start()
    try:
        await rig.device.receive_over(700.0, 25)
        await until(lambda: [e.talker for e in rig.events if isinstance(e, TalkerChanged)]
                    == ["cos", None], "COS open then closed")
        assert len(rig.heard) >= 20 and gw.counters["cos_signals"] == 2
        assert_hears(pcm_of(rig.heard), [700.0], [1000.0])
        rig.heard.clear()
        rig.device.send_frame(np.full(160, 8000, dtype=np.int16))  # audio with COS closed
        await asyncio.sleep(0.05)
        assert rig.heard == []
    finally:
        await rig.close()


async def test_device_lost_while_keyed_unkeys_alarms_and_redials() -> None:
    rig = Rig(ptt="dtmf")
    gw = await rig.start()
    try:
        gw.request_ptt("5", "disp", Priority.DISPATCHER)
        await until(lambda: rig.device.keyed, "keyed")
        rig.device.unplug()  # the box stays keyed: it heard nothing
        await until(lambda: "LinkDown" in rig.kinds(), "the keep-alive noticed")
        assert not gw.keyed and not gw.floor.keyed() and not gw.ready
        assert any(isinstance(e, floor.FloorRevoked) for e in rig.events)
        assert any(isinstance(e, RadioUnkeyed) for e in rig.events)
        assert gw.request_ptt("5", "disp", Priority.DISPATCHER)[0].__class__ is floor.FloorDenied
        for frame in tone_frames(1000.0, 3):
            gw.transmit(frame)
        assert gw.counters["tx_dropped"] >= 3
        await asyncio.sleep(0.3)  # a few redials fail while the box is away
        assert rig.kinds().count("LinkUp") == 1
        rig.device.plug()
        await until(lambda: rig.kinds().count("LinkUp") == 2, "the redial")
        await until(lambda: not rig.device.keyed, "the first thing on the new call: unkey")
        assert rig.device.calls == 2 and gw.health()["call"] is True
        assert gw.request_ptt("5", "disp", Priority.DISPATCHER)[0].__class__ \
            is floor.FloorGranted
    finally:
        await rig.close()


async def test_device_hang_up_redials() -> None:
    rig = Rig(ptt="dtmf")
    gw = await rig.start()
    try:
        rig.device.hang_up()
        await until(lambda: "LinkDown" in rig.kinds(), "the BYE noticed")
        down = next(e for e in rig.events if isinstance(e, LinkDown))
        assert "BYE" in down.why
        await until(lambda: rig.kinds().count("LinkUp") == 2 and gw.ready, "called again")
        assert rig.device.calls == 2
    finally:
        await rig.close()


async def test_stop_while_keyed_unkeys_before_bye() -> None:
    rig = Rig(ptt="info")
    gw = await rig.start()
    try:
        gw.request_ptt("5", "disp", Priority.DISPATCHER)
        await until(lambda: rig.device.keyed, "keyed")
        await gw.stop()
        await until(lambda: ("bye", "BYE received") in rig.device.log, "the BYE")
        order = [w for w, _ in rig.device.log if w in ("unkey", "bye")]
        assert order[-2:] == ["unkey", "bye"] and not rig.device.keyed
        assert any(isinstance(e, floor.FloorRevoked) for e in rig.events)
    finally:
        await rig.close()


async def test_absent_device_and_refusal_are_os_errors() -> None:
    rig = Rig(ptt="dtmf", reject=503)
    with pytest.raises(RoipLinkError, match="503"):
        await rig.start()
    await until(lambda: ("ack", "ACK received") in rig.device.log, "the failure ACKed")
    rig.device.close()
    silent = Rig(ptt="dtmf")
    silent.device.unplugged = True
    with pytest.raises(OSError, match="did not answer"):
        await silent.start(invite_timeout_s=0.3)
    silent.device.close()


async def test_ptt_key_fault_when_call_gone() -> None:
    rig = Rig(ptt="dtmf")
    gw = await rig.start()
    try:
        assert gw.link is not None
        gw.link.close(bye=False)  # the link went away under us without a report
        gw.request_ptt("5", "disp", Priority.DISPATCHER)
        assert not gw.keyed and any(isinstance(e, GatewayFault) for e in rig.events)
        await until(lambda: "LinkDown" in rig.kinds(), "the loss")
    finally:
        await rig.close()


def test_redial_back_off() -> None:
    assert [redial_delay(n, 2.0, 30.0) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert redial_delay(10_000, 1.0, 60.0) == 60.0


def test_digit_sequences_and_their_timeout() -> None:
    m = DigitMatcher({"open": "*99", "close": "#"}, 1.0)
    assert [m.feed(d, t) for d, t in (("*", 0.0), ("9", 0.2), ("9", 0.4))] == [None, None,
                                                                                 "open"]
    assert m.feed("*", 1.0) is None and m.feed("9", 2.5) is None  # too slow: a new sequence
    assert m.feed("9", 2.6) is None and m.feed("#", 2.7) == "close"


def _roip_config(roip: dict[str, Any], **gateway: Any) -> dict[str, Any]:
    return {"radio": {"gateways": [{"name": "r1", "kind": "roip", "roip": roip, **gateway}],
                      "talkgroups": [{"name": "hill", "gssi": "1", "gateway": "r1"}]}}


@pytest.mark.parametrize(("roip", "gateway", "message"), [
    ({"uri": "sip:radio@192.0.2.7", "ptt": "morse"}, {},
     "test.toml: radio.gateways[0].roip.ptt: Input should be 'dtmf', 'info' or 'vox' "
     "(got 'morse')"),
    ({"uri": "sip:radio@192.0.2.7", "key_digits": "*X"}, {},
     "radio.gateways[0].roip.key_digits"),
    ({"uri": "http://192.0.2.7"}, {}, "radio.gateways[0].roip.uri"),
    ({}, {}, "a roip device needs exactly one of uri or account"),
    ({"uri": "sip:r@192.0.2.7", "account": "r"}, {}, "exactly one of uri or account"),
    ({"uri": "sip:r@192.0.2.7", "key_digits": "#"}, {},
     "key_digits and unkey_digits must differ"),
    ({"uri": "sip:r@192.0.2.7", "local_host": "0.0.0.0"}, {},
     "radio.gateways[0].roip.local_host: local_host must be an address the device can "
     "reach (got '0.0.0.0')"),
    ({"uri": "sip:r@192.0.2.7", "info_key_body": "PTT:\non"}, {},
     "radio.gateways[0].roip.info_key_body"),
    ({"uri": "sip:r@192.0.2.7", "squelch": 1}, {},
     "test.toml: radio.gateways[0].roip.squelch: unknown key"),
    ({"uri": "sip:r@192.0.2.7"}, {"device": "/dev/ttyUSB0"},
     "a roip gateway is reached by [radio.gateways.roip] uri or account"),
])
def test_roip_settings_refused_with_one_clear_line(
        roip: dict[str, Any], gateway: dict[str, Any], message: str) -> None:
    from dispatch.config import ConfigError, parse_settings

    with pytest.raises(ConfigError) as caught:
        parse_settings(_roip_config(roip, **gateway), "test.toml")
    assert len(caught.value.problems) == 1 and message in caught.value.problems[0]


def test_roip_settings_accepted_with_documented_defaults() -> None:
    from dispatch.config import parse_settings

    radio = parse_settings(_roip_config({"account": "roip-hill"}), "t").radio
    roip = radio.gateways[0].roip
    assert roip is not None and (roip.ptt, roip.cos, roip.key_digits, roip.unkey_digits) == (
        "dtmf", "vox", "*", "#")
    assert (roip.info_content_type, roip.info_key_body) == ("application/x-ptt", "PTT: on")
    bad = {"radio": {"gateways": [{"name": "r1", "kind": "tetra", "device": "/dev/x",
                                   "roip": {"uri": "sip:r@192.0.2.7"}}],
                     "talkgroups": [{"name": "hill", "gssi": "1", "gateway": "r1"}]}}
    from dispatch.config import ConfigError

    with pytest.raises(ConfigError, match="only allowed for, kind = \"roip\""):
        parse_settings(bad, "t")


def test_a_bad_roip_key_stops_the_daemon_with_exit_2(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "d.toml"
    config.write_text('[[radio.gateways]]\nname = "r1"\nkind = "roip"\n'
                      '[radio.gateways.roip]\nuri = "sip:radio@192.0.2.7"\nptt = "morse"\n')
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "run", "-c", str(config)],
                         capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 2
    assert "radio.gateways[0].roip.ptt: Input should be 'dtmf', 'info' or 'vox'" in run.stderr


async def test_hostile_datagrams_are_counted_and_dropped() -> None:
    import socket

    rig = Rig(ptt="dtmf", cos="vox")
    gw = await rig.start()
    try:
        link = gw.link
        assert link is not None and link._sip is not None and link._rtp is not None
        sip_port = link._sip.get_extra_info("sockname")[1]
        rtp_port = link._rtp.get_extra_info("sockname")[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"\x00" * 10, b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n",
                         b"B" * 60000):
                s.sendto(junk, ("127.0.0.1", sip_port))
            s.sendto(b"\x80", ("127.0.0.1", rtp_port))  # truncated RTP
            s.sendto(b"\x00" * 40, ("127.0.0.1", rtp_port))  # version 0
        await until(lambda: link.counters["sip_bad"] >= 3 and link.counters["rtp_bad"] >= 2,
                    "the junk counted")
        await rig.device.receive_over(700.0, 10)  # still working
        await until(lambda: len(rig.heard) >= 5, "audio after the junk")
        assert gw.ready and "LinkDown" not in rig.kinds()
    finally:
        await rig.close()


async def test_account_mode_dials_the_registered_contact() -> None:
    rig = Rig(ptt="dtmf")
    await rig.device.start()
    registered: dict[str, tuple[str, str, int]] = {}

    async def resolve(account: str) -> tuple[str, str, int] | None:
        return registered.get(account)

    gw = RoipGateway(RoipSettings("roip1", "5", account="hill", retry_s=0.05,
                                  retry_max_s=0.1, keepalive_s=0.5), rig.events.append,
                     link_factory=open_link, resolve=resolve)
    try:
        with pytest.raises(RoipError, match="'hill' is not registered"):
            await gw.start()
        registered["hill"] = (rig.device.uri, "127.0.0.1", rig.device.port)
        await gw.start()
        assert rig.device.in_call and gw.health()["device"] == rig.device.uri
    finally:
        await gw.stop()
        rig.device.close()


async def test_registrar_resolver_picks_the_accounts_udp_binding() -> None:
    from dispatch.radio_glue import registrar_resolver
    from telephony.registrar.core import Registrar, RegistrarSettings
    from telephony.registrar.store import Binding, MemoryBindingStore, MemoryCredentialStore

    store = MemoryBindingStore()
    registrar = Registrar(RegistrarSettings(realm="r", domain="dispatch.local"), b"k" * 32,
                          store, MemoryCredentialStore({}))
    aor = registrar.aor_for("hill")
    await store.replace(aor, [
        Binding(aor, "sip:hill@10.0.0.5:5060", 2000.0, "c1", 1, "UDP", "192.0.2.9", 40000,
                registered_at=10.0),
        Binding(aor, "sip:hill@10.0.0.5:5061;transport=tls", 2000.0, "c2", 1, "TLS",
                "192.0.2.9", 40001, registered_at=20.0),
        Binding(aor, "sip:old@10.0.0.5", 500.0, "c3", 1, "UDP", "192.0.2.9", 40002)])
    resolve = registrar_resolver(registrar, lambda: 1000.0)
    assert await resolve("hill") == ("sip:hill@10.0.0.5:5060", "192.0.2.9", 40000)
    assert await resolve("nobody") is None


@given(st.lists(st.tuples(st.sampled_from("0123456789*#ABCD"),
                          st.floats(0, 5, allow_nan=False)), max_size=60))
def test_digit_matcher_never_fails_and_stays_bounded(presses: list[tuple[str, float]]) -> None:
    m = DigitMatcher({"open": "*9", "close": "#"}, 1.0)
    now = 0.0
    for digit, gap in presses:
        now += gap
        assert m.feed(digit, now) in (None, "open", "close")
        assert len(m._buffer) <= 16


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000) | st.sampled_from([
    b"BYE sip:x@y SIP/2.0\r\n\r\n",
    b"INFO sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:c@d>\r\nCall-ID: q\r\nCSeq: 1 INFO\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:c@d>\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"]))
def test_any_datagram_to_the_link_is_dropped_or_answered(data: bytes) -> None:
    from telephony.roip_link import LinkSettings, SipRadioLink

    lost: list[str] = []
    link = SipRadioLink(LinkSettings("sip:radio@127.0.0.1:5070", "127.0.0.1", 5070),
                        on_audio=lambda f: None, on_digit=lambda d: None,
                        on_info=lambda t, b: False, on_lost=lost.append)
    link._sip_in(data, ("127.0.0.1", 5070))
    link._rtp_in(data, ("127.0.0.1", 5072))
    assert lost == []  # nothing from a stranger ends a call we do not even have
