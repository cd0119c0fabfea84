"""Queue announcements: the sans-I/O planner on a stepped clock, number composition in
both languages, the shipped prompts, and the engine playing a sequence on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from enginepeers import Peer, until

from telephony.media.announce import (
    PHRASES,
    Announcement,
    AnnouncementPlanner,
    clip_names,
    number_clips,
)
from telephony.media.engine import EngineSettings, MediaEngine
from telephony.media.g711 import ulaw_decode, ulaw_encode
from telephony.media.prompts import PromptError, SequencePlayer, load_prompt

PROMPTS = Path(__file__).resolve().parents[2] / "conf" / "prompts"


def words(language: str, n: int) -> str:
    """The composed number as the text of its clips."""
    return " ".join(PHRASES[language][c.split("/")[1]] for c in number_clips(language, n))


@pytest.mark.parametrize(("n", "zh", "en"), [
    (0, "零", "zero"), (1, "一", "one"), (7, "七", "seven"), (10, "十", "ten"),
    (15, "十 五", "fifteen"), (20, "二 十", "twenty"), (42, "四 十 二", "forty two"),
    (100, "一 百", "one hundred"), (105, "一 百 零 五", "one hundred five"),
    (110, "一 百 一 十", "one hundred ten"), (999, "九 百 九 十 九", "nine hundred ninety nine"),
    (5000, "九 百 九 十 九", "nine hundred ninety nine"),  # clamped
])
def test_numbers_are_composed_from_digit_ten_and_hundred_clips(n: int, zh: str, en: str) -> None:
    assert words("zh", n) == zh
    assert words("en", n) == en


def test_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="language 'fr'"):
        number_clips("fr", 3)
    with pytest.raises(ValueError, match="language 'fr'"):
        AnnouncementPlanner().enter("c", "q", "fr", 30.0, 1, now=0.0)


def test_every_clip_is_shipped_as_8khz_mono_and_says_something() -> None:
    for name in clip_names():
        pcm = load_prompt(PROMPTS / f"{name}.wav")
        assert 0.15 < pcm.size / 8000 < 15, name
        rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
        assert rms > 300, f"{name} is (nearly) silent: rms {rms:.0f}"


def test_entry_then_every_interval_with_position_and_wait_on_a_stepped_clock() -> None:
    p = AnnouncementPlanner()
    positions = {"a": 1, "b": 2}
    p.enter("a", "q", "en", 30.0, 1, now=100.0)
    p.enter("b", "q", "zh", 0.0, 2, now=101.0)
    assert p.get_timer() == 100.0
    first = p.handle_timer(100.0, positions.get)
    assert first == [Announcement("a", ("en/pos_pre", "en/n1", "en/pos_post", "en/hold"), "moh",
                                  1, None)]  # no answers yet: no wait time
    assert p.get_timer() == 101.0
    assert [x.call_id for x in p.handle_timer(101.0, positions.get)] == ["b"]
    assert p.get_timer() == 130.0  # b is announced on entry only (every = 0)
    assert p.handle_timer(129.99, positions.get) == []
    # A call answered after 90 s from position 1: 90 s per place in line.
    p.enter("c", "q", "en", 30.0, 1, now=110.0)
    p.handle_timer(110.0, {"c": 1}.get)
    p.answered("c", "q", 90.0)
    assert p.expected_wait("q", 2) == 180.0
    again = p.handle_timer(130.0, positions.get)
    assert again[0].clips == ("en/pos_pre", "en/n1", "en/pos_post", "en/wait_pre", "en/n2",
                              "en/wait_post", "en/hold")
    assert again[0].expected_wait == 90.0
    assert p.get_timer() == 160.0


def test_expected_wait_short_one_minute_and_capped_in_chinese() -> None:
    p = AnnouncementPlanner(window=2)
    for i, wait in enumerate((20.0, 40.0)):
        p.enter(f"x{i}", "q", "zh", 30.0, 1, now=0.0)
        p.answered(f"x{i}", "q", wait)
    p.enter("a", "q", "zh", 30.0, 1, now=0.0)
    assert p.handle_timer(0.0, {"a": 1}.get)[0].clips[-2:] == ("zh/wait_short", "zh/hold")
    assert p.handle_timer(30.0, {"a": 2}.get)[0].clips[-4:] == (
        "zh/wait_pre", "zh/n1", "zh/wait_post1", "zh/hold")  # 2 × 30 s = one minute
    p.enter("old", "q", "zh", 30.0, 1, now=0.0)
    p.answered("old", "q", 50000.0)  # the window keeps the last two: 40 and 50000
    long = p.handle_timer(60.0, {"a": 400}.get)[0]
    assert long.clips[:6] == ("zh/pos_pre", "zh/n4", "zh/n100", "zh/pos_post", "zh/wait_pre",
                              "zh/n9")
    assert long.clips[6:9] == ("zh/n10", "zh/n9", "zh/wait_post")  # capped at 99 minutes


def test_calls_not_in_line_are_skipped_until_back_and_leavers_are_forgotten() -> None:
    p = AnnouncementPlanner()
    p.enter("a", "q", "zh", 30.0, 1, now=0.0)
    assert p.handle_timer(0.0, lambda _: None) == []  # ringing an agent: nothing played
    assert p.get_timer() is None
    p.requeued("a", now=12.0)  # the agent did not answer: announce again at once
    assert [x.position for x in p.handle_timer(12.0, {"a": 3}.get)] == [3]
    assert p.get_timer() == 42.0
    p.requeued("a", now=20.0)  # still scheduled: the rhythm is kept
    assert p.get_timer() == 42.0
    assert p.queue_of("a") == "q"
    p.leave("a")
    assert p.get_timer() is None and "a" not in p and p.queue_of("a") is None


def test_a_preempted_caller_first_hears_why_and_teaches_no_wait() -> None:
    p = AnnouncementPlanner()
    p.enter("v", "q", "en", 30.0, 1, now=0.0, preempted=True)
    clips = p.handle_timer(0.0, {"v": 1}.get)[0].clips
    assert clips[:2] == ("en/preempted", "en/pos_pre")
    assert p.handle_timer(30.0, {"v": 1}.get)[0].clips[0] == "en/pos_pre"  # said once
    p.answered("v", "q", 600.0)  # its wait includes its first conversation
    assert p.expected_wait("q", 1) is None


def test_sequence_player_plays_once_then_loops_its_tail() -> None:
    intro = np.arange(320, dtype=np.int16)
    tail = np.full(160, 7, dtype=np.int16)
    player = SequencePlayer("x", intro, tail)
    frames = [player.next_frame() for _ in range(5)]
    assert [int(f[0]) for f in frames if f is not None] == [0, 160, 7, 7, 7]
    assert not player.finished
    once = SequencePlayer("y", intro, None)
    assert [once.next_frame() is None for _ in range(3)] == [False, False, True]
    assert once.finished


_port = [47000]


@pytest_asyncio.fixture(loop_scope="session")
async def engine() -> AsyncIterator[MediaEngine]:
    _port[0] += 100
    clock = [1000.0]
    e = MediaEngine(EngineSettings(port_min=_port[0], port_max=_port[0] + 99,
                                   dead_media_s=30.0, prompts_dir=PROMPTS),
                    clock=lambda: clock[0], wallclock=lambda: 0.0)
    await e.start(run_clock=False)
    yield e
    await e.stop()


async def test_engine_plays_the_announcement_then_music_on_hold_over_rtp(
        engine: MediaEngine) -> None:
    peer = Peer(9)
    peer.use_answer(await engine.answer("a", peer.offer()))
    clips = ("en/pos_pre", "en/n3", "en/pos_post")
    engine.play_sequence("a", clips, "moh")
    expected = np.concatenate([load_prompt(PROMPTS / f"{c}.wav") for c in clips])
    moh = load_prompt(PROMPTS / "moh.wav")
    frames = expected.size // 160 + moh.size // 160 + 50
    for k in range(frames):
        engine.tick(1000.0 + 0.02 * (k + 1))
        if k % 10 == 9:  # let the peer read before its socket buffer fills
            await until(lambda k=k: len(peer.received) + len(peer.drain()) > k - 10, "frames")
    await until(lambda: len(peer.received) + len(peer.drain()) >= frames, "every frame")
    heard = peer.heard()
    # Sample for sample what G.711 makes of the prompts: the clips, then the music, looping.
    law = ulaw_decode(ulaw_encode(np.concatenate([expected, moh, moh[:50 * 160]])))
    assert np.array_equal(heard[:law.size], law)
    with pytest.raises(PromptError, match="cannot read"):
        engine.play_sequence("a", ("en/nope",), "moh")
    with pytest.raises(PromptError, match="must be 1..64"):
        engine.play_sequence("a", ("../en/n1",), None)
    with pytest.raises(PromptError, match="nothing to play"):
        engine.play_sequence("a", (), None)
