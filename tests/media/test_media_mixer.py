"""The mixer, proved by FFT: each leg sends its own tone; we look at what each hears.

Tones sit on exact FFT bins (multiples of 50 Hz over 160 samples at 8 kHz),
so an allowed tone shows at its full amplitude and a forbidden one must be at
least 30 dB below it.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.media.mixer import Channel, LegConfig, LegMode, Mixer, MixerError

AMP = 3000.0
TONES = {"caller": 400.0, "taker": 1000.0, "super": 1600.0, "radio": 2200.0, "other": 2800.0}


def tone(freq: float, amp: float = AMP, tick: int = 0) -> np.ndarray:
    t = (np.arange(160) + 160 * tick) / 8000
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def level_db(frame: np.ndarray, freq: float) -> float:
    """Amplitude of ``freq`` in ``frame`` relative to AMP, in dB."""
    spectrum = np.abs(np.fft.rfft(frame.astype(np.float64))) * 2 / len(frame)
    return float(20 * np.log10(max(spectrum[int(freq / 50)], 1e-9) / AMP))


def hears(mixer: Mixer, tick: int = 0) -> dict[Hashable, set[str]]:
    """Run one tick of tones; say which tones each leg hears (and check the rest are >= 30 dB down)."""
    frames = {leg: tone(TONES[str(leg)], tick=tick) for leg in mixer.order}
    result = mixer.mix(frames)
    heard: dict[Hashable, set[str]] = {}
    for leg, out in result.outputs.items():
        levels = {name: level_db(out, f) for name, f in TONES.items()}
        heard[leg] = {name for name, db in levels.items() if db > -1.0}
        for name, db in levels.items():
            assert db > -1.0 or db <= -30.0, (leg, name, db)
    return heard


def call(*extra: tuple[str, LegConfig]) -> Mixer:
    m = Mixer()
    m.add_leg("caller", LegConfig("c1", channel=Channel.CALLER))
    m.add_leg("taker", LegConfig("c1", channel=Channel.CALL_TAKER))
    for leg, cfg in extra:
        m.add_leg(leg, cfg)
    return m


def test_two_party_call() -> None:
    assert hears(call()) == {"caller": {"taker"}, "taker": {"caller"}}


def test_listen_hears_all_heard_by_none() -> None:
    m = call(("super", LegConfig("c1", LegMode.LISTEN, channel=Channel.CALL_TAKER)))
    assert hears(m) == {"caller": {"taker"}, "taker": {"caller"}, "super": {"caller", "taker"}}


def test_whisper_heard_by_call_taker_only() -> None:
    m = call(("super", LegConfig("c1", LegMode.WHISPER, whisper_to="taker")))
    assert hears(m) == {"caller": {"taker"}, "taker": {"caller", "super"}, "super": {"caller", "taker"}}


def test_barge_heard_by_all() -> None:
    m = call(("super", LegConfig("c1", LegMode.BARGE)))
    assert hears(m) == {"caller": {"taker", "super"}, "taker": {"caller", "super"},
                        "super": {"caller", "taker"}}


def test_muted_and_deaf() -> None:
    m = call(("radio", LegConfig("c1", muted=True)), ("super", LegConfig("c1", deaf=True)))
    assert hears(m) == {"caller": {"taker", "super"}, "taker": {"caller", "super"},
                        "radio": {"caller", "taker", "super"}, "super": set()}


def test_conferences_are_isolated() -> None:
    m = call(("radio", LegConfig("c2")), ("other", LegConfig("c2")))
    assert hears(m) == {"caller": {"taker"}, "taker": {"caller"}, "radio": {"other"}, "other": {"radio"}}


def test_mode_switching_mid_call() -> None:
    m = call(("super", LegConfig("c1", LegMode.LISTEN)))
    both = {"caller", "taker"}
    steps = [
        (lambda: None, {"caller": {"taker"}, "taker": {"caller"}, "super": both}),
        (lambda: m.set_mode("super", LegMode.WHISPER, whisper_to="taker"),
         {"caller": {"taker"}, "taker": {"caller", "super"}, "super": both}),
        (lambda: m.set_mode("super", LegMode.BARGE),
         {"caller": {"taker", "super"}, "taker": {"caller", "super"}, "super": both}),
        (lambda: m.update("taker", muted=True),
         {"caller": {"super"}, "taker": {"caller", "super"}, "super": {"caller"}}),
        (lambda: m.remove_leg("super"), {"caller": set(), "taker": {"caller"}}),
    ]
    for tick, (change, expected) in enumerate(steps):
        change()
        assert hears(m, tick) == expected, tick


def test_whisper_to_absent_leg_is_heard_by_none() -> None:
    m = call(("super", LegConfig("c1", LegMode.WHISPER, whisper_to="nobody")))
    assert hears(m)["taker"] == {"caller"}


def test_saturation_clips_instead_of_wrapping() -> None:
    m = Mixer()
    for leg in "abc":
        m.add_leg(leg, LegConfig("c"))
    loud = np.full(160, 30000, dtype=np.int16)
    out = m.mix({"a": loud, "b": loud, "c": -loud}).outputs
    assert (out["c"] == 32767).all()  # 60000 clipped
    assert (out["a"] == 0).all()  # 30000 - 30000: int32 accumulation, no wrap
    quiet = m.mix({"a": -loud, "b": -loud, "c": -loud}).outputs
    assert (quiet["a"] == -32768).all()


def test_recording_tap_two_channels() -> None:
    m = call(("super", LegConfig("c1", LegMode.WHISPER, whisper_to="taker", channel=Channel.CALL_TAKER)),
             ("radio", LegConfig("c1", channel=Channel.CALLER)),
             ("other", LegConfig("c1", LegMode.LISTEN, channel=Channel.CALL_TAKER)))
    m.add_leg("x", LegConfig("c2"))
    m.set_recording("c1", True)
    frames = {leg: tone(TONES.get(str(leg), 3000.0)) for leg in m.order}
    rec = m.mix(frames).recordings
    assert set(rec) == {"c1"} and rec["c1"].shape == (160, 2)
    left = {n for n, f in TONES.items() if level_db(rec["c1"][:, 0], f) > -1}
    right = {n for n, f in TONES.items() if level_db(rec["c1"][:, 1], f) > -1}
    assert (left, right) == ({"caller", "radio"}, {"taker", "super"})
    m.set_recording("c1", False)
    assert m.mix(frames).recordings == {}


def test_errors() -> None:
    m = call()
    with pytest.raises(MixerError):
        m.add_leg("caller", LegConfig("c1"))
    with pytest.raises(MixerError):
        m.remove_leg("ghost")
    with pytest.raises(MixerError):
        m.set_mode("caller", LegMode.WHISPER)
    with pytest.raises(MixerError):
        m.set_recording("nope", True)
    with pytest.raises(ValueError):
        m.mix_block(np.zeros((3, 160), dtype=np.int16))


def test_empty_mixer() -> None:
    m = Mixer()
    assert m.mix({}).outputs == {}


leg_configs = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(list(LegMode)), st.integers(0, 9),
              st.booleans(), st.booleans()),
    min_size=1, max_size=10)


@settings(max_examples=60, deadline=None)
@given(leg_configs, st.integers(0, 2**32 - 1))
def test_engine_equals_hear_matrix_product(configs: list[tuple[int, LegMode, int, bool, bool]], seed: int) -> None:
    m = Mixer()
    for i, (conf, mode, target, muted, deaf) in enumerate(configs):
        m.add_leg(i, LegConfig(conf, mode, whisper_to=target if mode is LegMode.WHISPER else None,
                               muted=muted, deaf=deaf))
    rng = np.random.default_rng(seed)
    block = rng.integers(-32768, 32768, size=(len(configs), 160), dtype=np.int16)
    out, _ = m.mix_block(block)
    rows = {leg: i for i, leg in enumerate(m.order)}
    for conf in {c[0] for c in configs}:
        legs = m.conference_legs(conf)
        idx = [rows[leg] for leg in legs]
        expected = np.clip(m.hear_matrix(conf).astype(np.int64) @ block[idx].astype(np.int64), -32768, 32767)
        assert (out[idx] == expected).all()
