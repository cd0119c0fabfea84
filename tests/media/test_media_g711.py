"""G.711 tables against the ITU-T reference algorithm written out in plain Python.

The reference below is the Sun ``g711.c`` that ``audioop`` wrapped (14-bit
µ-law input, 13-bit A-law input).  All 65,536 int16 inputs and all 256 codes
are compared; where ``audioop`` still exists (Python < 3.13) it is checked too.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from telephony.media import g711

SEG_UEND = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]
SEG_AEND = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]


def search(val: int, table: list[int]) -> int:
    for i, end in enumerate(table):
        if val <= end:
            return i
    return len(table)


def ref_linear2ulaw(pcm16: int) -> int:
    pcm_val = pcm16 >> 2
    if pcm_val < 0:
        pcm_val, mask = -pcm_val, 0x7F
    else:
        mask = 0xFF
    pcm_val = min(pcm_val, 8159) + (0x84 >> 2)
    seg = search(pcm_val, SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm_val >> (seg + 1)) & 0xF)) ^ mask


def ref_ulaw2linear(code: int) -> int:
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - t) if u & 0x80 else (t - 0x84)


def ref_linear2alaw(pcm16: int) -> int:
    pcm_val = pcm16 >> 3
    if pcm_val >= 0:
        mask = 0xD5
    else:
        mask, pcm_val = 0x55, -pcm_val - 1
    seg = search(pcm_val, SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= ((pcm_val >> 1) if seg < 2 else (pcm_val >> seg)) & 0xF
    return aval ^ mask


def ref_alaw2linear(code: int) -> int:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_all_inputs() -> None:
    expected = bytes(ref_linear2ulaw(v) for v in range(-32768, 32768))
    assert g711.ulaw_encode(ALL_PCM) == expected


def test_alaw_encode_all_inputs() -> None:
    expected = bytes(ref_linear2alaw(v) for v in range(-32768, 32768))
    assert g711.alaw_encode(ALL_PCM) == expected


def test_ulaw_decode_all_codes() -> None:
    assert g711.ulaw_decode(ALL_CODES).tolist() == [ref_ulaw2linear(c) for c in range(256)]


def test_alaw_decode_all_codes() -> None:
    assert g711.alaw_decode(ALL_CODES).tolist() == [ref_alaw2linear(c) for c in range(256)]


@pytest.mark.parametrize(
    ("encode", "decode", "silence", "peak"),
    [
        (g711.ulaw_encode, g711.ulaw_decode, 0xFF, 32124),
        (g711.alaw_encode, g711.alaw_decode, 0xD5, 32256),
    ],
)
def test_known_points_and_idempotence(encode, decode, silence, peak) -> None:  # type: ignore[no-untyped-def]
    assert encode(np.zeros(1, dtype=np.int16)) == bytes([silence])
    assert decode(encode(np.array([32767], dtype=np.int16))).tolist() == [peak]
    # Decoding then re-encoding any code gives a code that decodes to the same value.
    once = decode(ALL_CODES)
    assert decode(encode(once)).tolist() == once.tolist()


def test_rejects_wrong_dtype() -> None:
    with pytest.raises(TypeError):
        g711.ulaw_encode(np.zeros(4, dtype=np.int32))  # type: ignore[arg-type]


def test_matches_audioop_where_available() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            audioop = importlib.import_module("audioop")
        except ImportError:
            pytest.skip("audioop removed (Python >= 3.13)")
    raw = ALL_PCM.tobytes()
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(raw, 2)
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(raw, 2)
    assert g711.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)
