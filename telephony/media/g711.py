"""G.711 µ-law and A-law through numpy lookup tables.

The tables are built once per process from the ITU-T G.711 reference
algorithm (the Sun ``g711.c`` that CPython's ``audioop`` used), so the
results are bit-exact with ``audioop.lin2ulaw``/``ulaw2lin``/``lin2alaw``/
``alaw2lin`` at width 2.  Encoding is one table look-up per sample on the
16-bit value reinterpreted as unsigned (65,536 entries); decoding is a
256-entry table.  No per-sample Python runs after import.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "Pcm",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

Pcm = npt.NDArray[np.int16]

_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude limit, as in the reference coder


def _segments(mag: npt.NDArray[np.int32], ends: tuple[int, ...]) -> npt.NDArray[np.int32]:
    # The reference searches for the first end >= value; searchsorted 'left' is that.
    return np.searchsorted(np.array(ends, dtype=np.int32), mag, side="left").astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    val = pcm >> 2  # 14-bit input, arithmetic shift like the C code
    negative = val < 0
    mask = np.where(negative, 0x7F, 0xFF)
    mag = np.minimum(np.where(negative, -val, val), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segments(mag, _SEG_UEND)
    uval = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF)
    uval = np.where(seg >= 8, 0x7F, uval)
    return (uval ^ mask).astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    val = pcm >> 3  # 13-bit input
    negative = val < 0
    mask = np.where(negative, 0x55, 0xD5)
    mag = np.where(negative, -val - 1, val)
    seg = _segments(mag, _SEG_AEND)
    segc = np.minimum(seg, 7)
    quant = np.where(segc < 2, (mag >> 1) & 0xF, (mag >> segc) & 0xF)
    aval = np.where(seg >= 8, 0x7F, (segc << 4) | quant)
    return (aval ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ALAW_ENC = _build_alaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_DEC = _build_alaw_decode()
for _table in (_ULAW_ENC, _ALAW_ENC, _ULAW_DEC, _ALAW_DEC):
    _table.setflags(write=False)


def _as_pcm(samples: Pcm) -> npt.NDArray[np.uint16]:
    if samples.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, got {samples.dtype}")
    return np.ascontiguousarray(samples).view(np.uint16)


def ulaw_encode(samples: Pcm) -> bytes:
    """Encode int16 linear PCM to µ-law bytes (one byte per sample)."""
    return _ULAW_ENC[_as_pcm(samples)].tobytes()


def alaw_encode(samples: Pcm) -> bytes:
    """Encode int16 linear PCM to A-law bytes (one byte per sample)."""
    return _ALAW_ENC[_as_pcm(samples)].tobytes()


def ulaw_decode(payload: bytes) -> Pcm:
    """Decode µ-law bytes to int16 linear PCM."""
    return _ULAW_DEC[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> Pcm:
    """Decode A-law bytes to int16 linear PCM."""
    return _ALAW_DEC[np.frombuffer(payload, dtype=np.uint8)]
