"""The conference mixer: every anchored leg of one core, one tick at a time.

Theory of operation
-------------------
A conference is a set of legs; a two-party call is a conference of two.  Each
leg has a mode, and who hears whom is the *hear matrix* ``H`` (row = listener,
column = speaker) of its conference::

    H[i, j] = 1  iff  i is not deaf, i != j, j is not muted, and
                      j is in mode TALK or BARGE (heard by all), or
                      j is in mode WHISPER with whisper_to == i
    LISTEN legs are heard by none; every non-deaf leg hears the others.

A tick's output is ``saturate_int16(H @ X)`` with ``X`` the N x 160 block of
the legs' int16 frames, accumulated in int32 (no overflow below 65,536 legs).
The engine does not build ``H`` per tick.  Legs are kept in rows grouped by
conference size, so all conferences of size K are one (C, K, 160) view of the
input block; for each size (a handful: 2, 3, 4 ...) one numpy expression takes
every conference's sum ``T`` of legs heard by all, gives each leg ``T`` minus
its own contribution; then the few whisper edges are added, deaf legs zeroed
and everything clipped.  That is the same product, in O(legs x samples) numpy
work with no per-sample and no per-conference Python.  :meth:`Mixer.hear_matrix`
builds ``H`` explicitly for tests and diagnostics; the tests check the two agree.

Recording: each leg is assigned a :class:`Channel` when it joins.  The tap of
a recorded conference yields a 160 x 2 int16 block per tick: channel 0 is the
sum of the CALLER-side legs that someone can hear (the public caller, a
patched radio talkgroup), channel 1 the CALL_TAKER side (the call taker, and
supervisors who whisper or barge: what the call taker was told).  Muted and
LISTEN legs are heard by nobody and so are not recorded.

The mixer holds one tick of audio, so it adds one frame (20 ms) of delay.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

__all__ = [
    "Channel",
    "LegConfig",
    "LegMode",
    "MixResult",
    "Mixer",
    "MixerError",
]

Pcm = npt.NDArray[np.int16]
LegId = Hashable
_I16_MIN, _I16_MAX = -32768, 32767


class MixerError(KeyError):
    """An unknown leg or conference, or a leg added twice (a bug in the caller)."""


class LegMode(enum.Enum):
    """How a leg takes part: who hears it."""

    TALK = "talk"  # hears all, heard by all
    LISTEN = "listen"  # silent monitor: hears all, heard by none
    WHISPER = "whisper"  # hears all, heard only by ``whisper_to``
    BARGE = "barge"  # force-in: hears all, heard by all


class Channel(enum.Enum):
    """Which side of the two-channel recording a leg's voice goes to."""

    CALLER = 0
    CALL_TAKER = 1
    NONE = -1


@dataclass(frozen=True, slots=True)
class LegConfig:
    """One leg's place in the mix."""

    conference: Hashable
    mode: LegMode = LegMode.TALK
    whisper_to: Hashable | None = None
    muted: bool = False
    deaf: bool = False
    channel: Channel = Channel.CALLER


@dataclass(frozen=True, slots=True)
class MixResult:
    """One tick: what each leg hears, and the recording block of each recorded conference."""

    outputs: dict[Hashable, Pcm]
    recordings: dict[Hashable, Pcm]  # conference -> (frame, 2) int16


@dataclass(frozen=True, slots=True)
class _Bucket:
    """Conferences of one size K, stored as consecutive rows: a (C, K, frame) view."""

    start: int
    count: int  # conferences
    size: int  # legs per conference
    speak: npt.NDArray[np.int32]  # (C, K, 1): heard by all
    left: npt.NDArray[np.int32]  # (C, K, 1): recorded on channel 0
    right: npt.NDArray[np.int32]  # (C, K, 1): recorded on channel 1
    rec_slot: npt.NDArray[np.intp]  # (C,): index into rec_confs, -1 if not recorded
    recorded: npt.NDArray[np.bool_]
    any_recorded: bool
    all_recorded: bool


@dataclass(frozen=True, slots=True)
class _Layout:
    order: tuple[Hashable, ...]  # legs sorted by conference size, then conference
    buckets: tuple[_Bucket, ...]
    hear: npt.NDArray[np.int32]  # (L, 1): 0 for deaf legs
    whisper_src: npt.NDArray[np.intp]
    whisper_dst: npt.NDArray[np.intp]
    rec_confs: tuple[Hashable, ...]
    any_deaf: bool


def _saturate(block: npt.NDArray[np.int32]) -> Pcm:
    np.clip(block, _I16_MIN, _I16_MAX, out=block)
    return block.astype(np.int16)


def _sum_legs(legs: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Sum (C, K, frame) over K in int32; a loop over K (small) beats a strided reduce."""
    total = legs[:, 0].copy()
    for k in range(1, legs.shape[1]):
        total += legs[:, k]
    return total


def _column(values: list[bool], count: int, size: int) -> npt.NDArray[np.int32]:
    return np.array(values, dtype=np.int32).reshape(count, size, 1)


class Mixer:
    """Mixes every conference of one core at each 20 ms tick."""

    def __init__(self, frame_samples: int = 160) -> None:
        self.frame_samples = frame_samples
        self._legs: dict[Hashable, LegConfig] = {}
        self._recorded: set[Hashable] = set()
        self._layout: _Layout | None = None

    # -- membership -------------------------------------------------------

    def add_leg(self, leg: LegId, config: LegConfig) -> None:
        """Join ``leg`` to ``config.conference`` (created on first leg)."""
        if leg in self._legs:
            raise MixerError(f"leg {leg!r} already mixed")
        self._legs[leg] = config
        self._layout = None

    def remove_leg(self, leg: LegId) -> None:
        """Take ``leg`` out; an empty conference disappears."""
        conf = self.leg(leg).conference
        del self._legs[leg]
        if not any(c.conference == conf for c in self._legs.values()):
            self._recorded.discard(conf)
        self._layout = None

    def leg(self, leg: LegId) -> LegConfig:
        """The current configuration of ``leg``."""
        try:
            return self._legs[leg]
        except KeyError:
            raise MixerError(f"unknown leg {leg!r}") from None

    def update(self, leg: LegId, **changes: object) -> LegConfig:
        """Change mode, whisper_to, muted, deaf or channel between two ticks."""
        config = replace(self.leg(leg), **changes)  # type: ignore[arg-type]
        self._legs[leg] = config
        self._layout = None
        return config

    def set_mode(self, leg: LegId, mode: LegMode, whisper_to: Hashable | None = None) -> LegConfig:
        """Switch a leg's mode mid-call (force-in escalation: listen -> whisper -> barge)."""
        if mode is LegMode.WHISPER and whisper_to is None:
            raise MixerError("whisper needs a target leg")
        return self.update(leg, mode=mode, whisper_to=whisper_to)

    def set_recording(self, conference: Hashable, on: bool) -> None:
        """Start or stop the two-channel recording tap of ``conference``."""
        if on:
            if not any(c.conference == conference for c in self._legs.values()):
                raise MixerError(f"unknown conference {conference!r}")
            self._recorded.add(conference)
        else:
            self._recorded.discard(conference)
        self._layout = None

    @property
    def order(self) -> tuple[Hashable, ...]:
        """Row order of :meth:`mix_block` input and output."""
        return self._get_layout().order

    def conference_legs(self, conference: Hashable) -> tuple[Hashable, ...]:
        """Legs of ``conference`` in row order."""
        return tuple(leg for leg in self.order if self._legs[leg].conference == conference)

    # -- the hear matrix ----------------------------------------------------

    def _speaks(self, config: LegConfig) -> bool:
        return not config.muted and config.mode in (LegMode.TALK, LegMode.BARGE)

    def _whisper_edge(self, speaker: LegConfig, listener: LegId) -> bool:
        return (not speaker.muted and speaker.mode is LegMode.WHISPER
                and speaker.whisper_to == listener)

    def hear_matrix(self, conference: Hashable) -> npt.NDArray[np.int32]:
        """``H`` of one conference, rows and columns in :meth:`conference_legs` order."""
        legs = self.conference_legs(conference)
        h = np.zeros((len(legs), len(legs)), dtype=np.int32)
        for i, listener in enumerate(legs):
            if self._legs[listener].deaf:
                continue
            for j, speaker in enumerate(legs):
                cfg = self._legs[speaker]
                if i != j and (self._speaks(cfg) or self._whisper_edge(cfg, listener)):
                    h[i, j] = 1
        return h

    # -- layout, rebuilt only when membership or modes change ----------------

    def _get_layout(self) -> _Layout:
        if self._layout is None:
            self._layout = self._build_layout()
        return self._layout

    def _build_layout(self) -> _Layout:
        members: dict[Hashable, list[Hashable]] = {}
        for leg, cfg in self._legs.items():
            members.setdefault(cfg.conference, []).append(leg)
        confs = sorted(members, key=lambda c: len(members[c]))  # stable: join order within a size
        order = tuple(leg for c in confs for leg in members[c])
        row = {leg: i for i, leg in enumerate(order)}
        cfgs = [self._legs[leg] for leg in order]
        edges = [(i, row[c.whisper_to]) for i, c in enumerate(cfgs)
                 if c.whisper_to in row and row[c.whisper_to] != i
                 and self._whisper_edge(c, c.whisper_to)
                 and self._legs[c.whisper_to].conference == c.conference]
        whisperers = {src for src, _ in edges}
        audible = [self._speaks(c) or i in whisperers for i, c in enumerate(cfgs)]
        rec_confs = tuple(c for c in confs if c in self._recorded)
        slot = {c: k for k, c in enumerate(rec_confs)}
        buckets, start = [], 0
        for size in sorted({len(m) for m in members.values()}):
            group = [c for c in confs if len(members[c]) == size]
            rows = range(start, start + size * len(group))
            rec = [audible[i] and cfgs[i].conference in slot for i in rows]
            slots = np.array([slot.get(c, -1) for c in group], dtype=np.intp)
            buckets.append(_Bucket(
                start=start, count=len(group), size=size,
                speak=_column([self._speaks(cfgs[i]) for i in rows], len(group), size),
                left=_column([r and cfgs[i].channel is Channel.CALLER
                              for i, r in zip(rows, rec, strict=True)], len(group), size),
                right=_column([r and cfgs[i].channel is Channel.CALL_TAKER
                               for i, r in zip(rows, rec, strict=True)], len(group), size),
                rec_slot=slots, recorded=slots >= 0,
                any_recorded=bool((slots >= 0).any()), all_recorded=bool((slots >= 0).all())))
            start = rows.stop
        return _Layout(
            order=order, buckets=tuple(buckets),
            hear=np.array([not c.deaf for c in cfgs], dtype=np.int32).reshape(-1, 1),
            whisper_src=np.array([e[0] for e in edges], dtype=np.intp),
            whisper_dst=np.array([e[1] for e in edges], dtype=np.intp),
            rec_confs=rec_confs,
            any_deaf=any(c.deaf for c in cfgs),
        )

    # -- the tick -------------------------------------------------------------

    def mix_block(self, block: Pcm) -> tuple[Pcm, dict[Hashable, Pcm]]:
        """Mix one tick: ``block`` is legs x frame int16 in :attr:`order`.

        Returns what each leg hears (same shape and order) and the recording
        block (frame x 2 int16) of every recorded conference.
        """
        lay = self._get_layout()
        n = self.frame_samples
        if block.shape != (len(lay.order), n):
            raise ValueError(f"block must be {len(lay.order)} x {n}")
        x = block.astype(np.int32)
        out = np.empty_like(x)
        # Recordings are built interleaved (conference, sample, channel) so that each
        # value is ready for a WAV writer without a transposing copy.
        recs = np.zeros((len(lay.rec_confs), n, 2), dtype=np.int32)
        for b in lay.buckets:
            stop = b.start + b.count * b.size
            legs = x[b.start:stop].reshape(b.count, b.size, n)  # a view: rows are contiguous
            spoken = legs * b.speak
            np.subtract(_sum_legs(spoken)[:, None, :], spoken,
                        out=out[b.start:stop].reshape(b.count, b.size, n))
            if b.any_recorded:
                mine = slice(None) if b.all_recorded else b.recorded
                chosen, slots = legs[mine], b.rec_slot[mine]
                recs[slots, :, 0] = _sum_legs(chosen * b.left[mine])
                recs[slots, :, 1] = _sum_legs(chosen * b.right[mine])
        if lay.whisper_src.size:
            np.add.at(out, lay.whisper_dst, x[lay.whisper_src])
        if lay.any_deaf:
            out *= lay.hear
        return _saturate(out), dict(zip(lay.rec_confs, _saturate(recs), strict=True))

    def mix(self, frames: Mapping[Hashable, Pcm]) -> MixResult:
        """Mix one tick from a mapping leg -> int16 frame (absent legs are silent)."""
        order = self.order
        block = np.zeros((len(order), self.frame_samples), dtype=np.int16)
        for i, leg in enumerate(order):
            frame = frames.get(leg)
            if frame is not None:
                block[i] = frame
        out, recs = self.mix_block(block)
        return MixResult(dict(zip(order, out, strict=True)), recs)
