"""Queue announcements: what a waiting caller hears next, sans-I/O.

Theory of operation
-------------------
A caller who enters a queue is announced at once, then every ``every`` seconds
while waiting (``every = 0``: only on entry): their position, the expected wait
(when the queue has answered calls recently) and "please hold", then music on
hold loops until the next announcement or until a call taker answers.

:class:`AnnouncementPlanner` is handed ``now`` on every call and never reads a
clock.  The adapter (:mod:`telephony.b2bua.announcer`) tells it who entered and
left a queue and who was answered after how long; it asks :meth:`get_timer` for
the next deadline and, when it passes, :meth:`handle_timer` with a lookup of
each call's current position; the planner returns one :class:`Announcement`
per caller due: a tuple of prompt names (``"zh/pos_pre"``, ``"zh/n3"`` ...) to
play back to back, then the hold music to loop.

Prompts are 8 kHz WAV clips in ``conf/prompts/{zh,en}/`` generated once by
``scripts/make-prompts`` (espeak-ng) and committed.  Numbers are composed from
digit, ten and hundred clips (:func:`number_clips`), English adding its teens
and tens.  :data:`PHRASES` is the text of every clip, so the clips can always be
regenerated.

Expected wait: each call answered from a queue contributes ``wait / position``
(seconds of waiting per place in line, ``position`` being where it entered);
the expected wait at position *p* is *p* times the mean of the last ``window``
such figures.  A queue with no recent answers announces no wait time.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "LANGUAGES",
    "MAX_NUMBER",
    "PHRASES",
    "Announcement",
    "AnnouncementPlanner",
    "clip_names",
    "number_clips",
]

LANGUAGES = ("zh", "en")
MAX_NUMBER = 999
"""Positions above this are announced as 999; waits are capped at 99 minutes."""
MAX_MINUTES = 99
HOLD_MUSIC = "moh"

_DIGITS_ZH = "零一二三四五六七八九"
_DIGITS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS_EN = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
             "seventeen", "eighteen", "nineteen")
_TENS_EN = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

PHRASES: dict[str, dict[str, str]] = {
    "zh": {
        "pos_pre": "您现在排在第", "pos_post": "位",
        "wait_pre": "预计等待时间约", "wait_post": "分钟", "wait_post1": "分钟",
        "wait_short": "预计等待时间不到一分钟",
        "hold": "请不要挂机，接警员将尽快为您服务",
        "preempted": "您的通话因紧急警情被临时中断，您已排在队列首位，请稍候",
        **{f"n{i}": d for i, d in enumerate(_DIGITS_ZH)},
        "n10": "十", "n100": "百",
    },
    "en": {
        "pos_pre": "You are number", "pos_post": "in the queue.",
        "wait_pre": "Your expected wait is about", "wait_post": "minutes.",
        "wait_post1": "minute.",
        "wait_short": "Your expected wait is less than one minute.",
        "hold": "Please stay on the line. A call taker will answer you shortly.",
        "preempted": "Your call was interrupted by an emergency call. "
                     "You are first in line. Please hold.",
        **{f"n{i}": d for i, d in enumerate(_DIGITS_EN)},
        **{f"n{10 + i}": d for i, d in enumerate(_TEENS_EN)},
        **{f"n{10 * t}": _TENS_EN[t] for t in range(2, 10)},
        "n100": "hundred",
    },
}
"""Every clip's text by language: what ``scripts/make-prompts`` speaks."""


def _zh_number(n: int) -> list[str]:
    hundreds, tens, units = n // 100, n // 10 % 10, n % 10
    out: list[str] = []
    if hundreds:
        out += [f"n{hundreds}", "n100"]
    if tens:
        if hundreds or tens > 1:  # 十五, but 一百一十五 and 二十五
            out.append(f"n{tens}")
        out.append("n10")
    elif hundreds and units:
        out.append("n0")  # 一百零五
    if units or n == 0:
        out.append(f"n{units}")
    return out


def _en_number(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    out = [f"n{hundreds}", "n100"] if hundreds else []
    if rest == 0:
        return out or ["n0"]
    if rest < 20:
        return out + [f"n{rest}"]
    out.append(f"n{rest // 10 * 10}")
    if rest % 10:
        out.append(f"n{rest % 10}")
    return out


def number_clips(language: str, n: int) -> tuple[str, ...]:
    """The clips that say ``n`` (0..999, clamped) in ``language``, e.g. zh 25 → 二 十 五."""
    if language not in LANGUAGES:
        raise ValueError(f"no prompts in language {language!r}")
    n = min(max(n, 0), MAX_NUMBER)
    words = _zh_number(n) if language == "zh" else _en_number(n)
    return tuple(f"{language}/{w}" for w in words)


def clip_names() -> list[str]:
    """Every prompt file the announcements need (without ``.wav``)."""
    return [f"{lang}/{key}" for lang, table in PHRASES.items() for key in table] + [HOLD_MUSIC]


@dataclass(frozen=True, slots=True)
class Announcement:
    """Play ``clips`` back to back to ``call_id``'s caller, then loop ``hold``."""

    call_id: str
    clips: tuple[str, ...]
    hold: str
    position: int
    expected_wait: float | None


@dataclass(slots=True)
class _Waiting:
    call_id: str
    queue: str
    language: str
    every: float
    entry_position: int
    preempted: bool  # re-queued after a pre-emption: its wait teaches nothing
    tell: bool  # the next announcement starts by saying why
    due: float | None
    timer: int = -1


@dataclass(slots=True)
class _Stats:
    per_place: deque[float] = field(default_factory=deque)


class AnnouncementPlanner:
    """Decides what each waiting caller hears next (see the module docstring)."""

    def __init__(self, window: int = 20, hold: str = HOLD_MUSIC) -> None:
        """Keep the last ``window`` answers per queue for the expected wait."""
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.hold = hold
        self._waiting: dict[str, _Waiting] = {}
        self._stats: dict[str, _Stats] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._waiting

    def enter(self, call_id: str, queue: str, language: str, every: float, position: int,
              now: float, *, preempted: bool = False) -> None:
        """A caller entered (or re-entered) ``queue`` at ``position``: announce at once.

        ``every`` > 0 repeats the announcement that often; ``preempted`` callers first
        hear why their call taker left them.
        """
        if language not in LANGUAGES:
            raise ValueError(f"no prompts in language {language!r}")
        old = self._waiting.get(call_id)
        was_preempted = preempted or (old is not None and old.preempted)
        w = _Waiting(call_id, queue, language, max(every, 0.0), max(position, 1),
                     was_preempted, preempted, now)
        self._waiting[call_id] = w
        self._arm(w, now)

    def queue_of(self, call_id: str) -> str | None:
        """The queue ``call_id`` is announced for, or None."""
        w = self._waiting.get(call_id)
        return w.queue if w is not None else None

    def leave(self, call_id: str) -> None:
        """The caller was answered, abandoned or released: no more announcements."""
        self._waiting.pop(call_id, None)

    def answered(self, call_id: str, queue: str, wait: float) -> None:
        """``call_id`` was answered from ``queue`` after ``wait`` s: learn from it."""
        w = self._waiting.pop(call_id, None)
        if w is None or w.preempted:  # a re-queued call's wait includes its first talk
            return
        stats = self._stats.setdefault(queue, _Stats())
        stats.per_place.append(max(wait, 0.0) / w.entry_position)
        while len(stats.per_place) > self.window:
            stats.per_place.popleft()

    def expected_wait(self, queue: str, position: int) -> float | None:
        """Seconds a caller at ``position`` can expect to wait; None without history."""
        stats = self._stats.get(queue)
        if stats is None or not stats.per_place:
            return None
        return max(position, 1) * sum(stats.per_place) / len(stats.per_place)

    def get_timer(self) -> float | None:
        """The next announcement's deadline, or None."""
        while self._timers and not self._live(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float,
                     position_of: Callable[[str], int | None]) -> list[Announcement]:
        """Announcements due at ``now``; ``position_of`` gives a call's place in line
        (None: not waiting any more, e.g. ringing an agent: skipped, not rescheduled
        until it is back in line)."""
        out: list[Announcement] = []
        while self._timers and self._timers[0][0] <= now:
            entry = heapq.heappop(self._timers)
            if not self._live(entry):
                continue
            w = self._waiting[entry[2]]
            position = position_of(w.call_id)
            w.due = None
            if position is None:
                continue
            out.append(self._announce(w, position))
            if w.every > 0:
                w.due = now + w.every
                self._arm(w, w.due)
        return out

    def requeued(self, call_id: str, now: float) -> None:
        """A call that was ringing an agent is back in line: announce it again now if its
        announcement fell due meanwhile (or it never had one)."""
        w = self._waiting.get(call_id)
        if w is not None and w.due is None:
            w.due = now
            self._arm(w, now)

    def _announce(self, w: _Waiting, position: int) -> Announcement:
        lang = w.language
        clips: list[str] = []
        if w.tell:
            clips.append(f"{lang}/preempted")
            w.tell = False
        clips += [f"{lang}/pos_pre", *number_clips(lang, position), f"{lang}/pos_post"]
        wait = self.expected_wait(w.queue, position)
        if wait is not None:
            if wait < 60:
                clips.append(f"{lang}/wait_short")
            else:
                minutes = min(math.ceil(wait / 60), MAX_MINUTES)
                clips += [f"{lang}/wait_pre", *number_clips(lang, minutes),
                          f"{lang}/wait_post1" if minutes == 1 else f"{lang}/wait_post"]
        clips.append(f"{lang}/hold")
        return Announcement(w.call_id, tuple(clips), self.hold, position, wait)

    def _arm(self, w: _Waiting, when: float) -> None:
        w.timer = next(self._seq)
        heapq.heappush(self._timers, (when, w.timer, w.call_id))

    def _live(self, entry: tuple[float, int, str]) -> bool:
        w = self._waiting.get(entry[2])
        return w is not None and w.timer == entry[1] and w.due is not None
