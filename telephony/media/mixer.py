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
The engine does not build ``H`` per tick: for all conferences at once it takes
the per-conference sum ``T`` of everyone heard by all (``np.add.reduceat`` over
legs kept sorted by conference), gives each leg ``T`` of its conference minus
its own contribution, adds the few whisper edges, zeroes deaf legs and clips.
That is the same product, in O(legs x samples) numpy work with no per-sample
or per-conference Python.  :meth:`Mixer.hear_matrix` builds ``H`` explicitly
for tests and diagnostics, and the tests check the two agree.

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
class _Layout:
    order: tuple[Hashable, ...]  # legs sorted by conference
    conf_of: npt.NDArray[np.intp]
    starts: npt.NDArray[np.intp]
    speak: npt.NDArray[np.int32]  # heard by all in its conference
    hear: npt.NDArray[np.int32]  # 0 for deaf legs
    whisper_src: npt.NDArray[np.intp]
    whisper_dst: npt.NDArray[np.intp]
    rec_rows: npt.NDArray[np.intp]  # legs feeding a recording, sorted by (conf, channel)
    rec_starts: npt.NDArray[np.intp]
    rec_keys: tuple[tuple[Hashable, int], ...]  # (conference, channel) per reduceat segment


def _saturate(block: npt.NDArray[np.int32]) -> Pcm:
    np.clip(block, _I16_MIN, _I16_MAX, out=block)
    return block.astype(np.int16)


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
        confs: dict[Hashable, int] = {}
        for cfg in self._legs.values():
            confs.setdefault(cfg.conference, len(confs))
        order = tuple(sorted(self._legs, key=lambda leg: confs[self._legs[leg].conference]))
        row = {leg: i for i, leg in enumerate(order)}
        cfgs = [self._legs[leg] for leg in order]
        conf_of = np.array([confs[c.conference] for c in cfgs], dtype=np.intp)
        starts = np.flatnonzero(np.r_[True, conf_of[1:] != conf_of[:-1]]) if cfgs else conf_of
        edges = [(i, row[c.whisper_to]) for i, c in enumerate(cfgs)
                 if c.whisper_to in row and row[c.whisper_to] != i
                 and self._whisper_edge(c, c.whisper_to)
                 and self._legs[c.whisper_to].conference == c.conference]
        rec = sorted(
            (confs[c.conference], c.channel.value, i) for i, c in enumerate(cfgs)
            if c.conference in self._recorded and c.channel is not Channel.NONE
            and (self._speaks(c) or any(src == i for src, _ in edges)))
        rec_rows = np.array([r[2] for r in rec], dtype=np.intp)
        keys = [(r[0], r[1]) for r in rec]
        rec_starts = np.array([k for k in range(len(keys)) if k == 0 or keys[k] != keys[k - 1]],
                              dtype=np.intp)
        names = {v: k for k, v in confs.items()}
        return _Layout(
            order=order, conf_of=conf_of, starts=starts.astype(np.intp),
            speak=np.array([self._speaks(c) for c in cfgs], dtype=np.int32),
            hear=np.array([not c.deaf for c in cfgs], dtype=np.int32),
            whisper_src=np.array([e[0] for e in edges], dtype=np.intp),
            whisper_dst=np.array([e[1] for e in edges], dtype=np.intp),
            rec_rows=rec_rows, rec_starts=rec_starts,
            rec_keys=tuple((names[keys[k][0]], keys[k][1]) for k in rec_starts.tolist()),
        )

    # -- the tick -------------------------------------------------------------

    def mix_block(self, block: Pcm) -> tuple[Pcm, dict[Hashable, Pcm]]:
        """Mix one tick: ``block`` is legs x frame int16 in :attr:`order`.

        Returns what each leg hears (same shape and order) and the recording
        block (frame x 2 int16) of every recorded conference.
        """
        lay = self._get_layout()
        if block.shape != (len(lay.order), self.frame_samples):
            raise ValueError(f"block must be {len(lay.order)} x {self.frame_samples}")
        if not lay.order:
            return block.copy(), {}
        x = block.astype(np.int32)
        spoken = x * lay.speak[:, None]
        totals = np.add.reduceat(spoken, lay.starts, axis=0)
        out = totals[lay.conf_of]
        out -= spoken
        if lay.whisper_src.size:
            np.add.at(out, lay.whisper_dst, x[lay.whisper_src])
        out *= lay.hear[:, None]
        return _saturate(out), self._recordings(lay, x)

    def _recordings(self, lay: _Layout, x: npt.NDArray[np.int32]) -> dict[Hashable, Pcm]:
        if not self._recorded:
            return {}
        recs = {conf: np.zeros((self.frame_samples, 2), dtype=np.int16) for conf in self._recorded}
        if lay.rec_rows.size:
            sums = _saturate(np.add.reduceat(x[lay.rec_rows], lay.rec_starts, axis=0))
            for (conf, channel), samples in zip(lay.rec_keys, sums, strict=True):
                recs[conf][:, channel] = samples
        return recs

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
