"""Benchmark: segment+encode evacuation texts, and encode submit_sm PDUs.

Run from the repository root:  python bench/sms_codec.py [count]
Prints figures; the last line is ``encode_per_s=N submit_pdu_per_s=M``.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sms.encoding import ReferenceAllocator, segment  # noqa: E402
from sms.pdu import encode_submit  # noqa: E402
from sms.smpp.codec import SubmitSm, encode_pdu  # noqa: E402
from sms.smpp.messages import build_submits  # noqa: E402

TEMPLATES = [
    "【{city}应急管理局】山洪预警：{district}沿河低洼地带居民请立即撤离至{site}安置点，"
    "途中注意安全，勿涉水通行。咨询电话12345。",
    "[{city} Emergency] Flood warning: residents of {district} must evacuate now to {site}. "
    "Do not cross flooded roads. Info: 12345",
    "台风红色预警：请{district}居民关好门窗，转移至{site}。Typhoon red alert, go to {site}.",
    "Evacuation order for {district}: leave via the north road to {site} before 18:00. "
    "Bring ID, water, medicine. Call 110/119/120 in danger. €0 shelter cost, {{no pets}}.",
    "{district}化工厂泄漏😷请立即向上风方向撤离至{site}，用湿毛巾捂住口鼻。",
]
CITIES = ["杭州", "Wenzhou", "宁波", "Taizhou"]
DISTRICTS = ["西湖区", "Lucheng District", "鄞州区", "Jiaojiang"]
ROUNDS = 3
SITES = ["第一中学", "Sports Centre", "镇政府礼堂", "North Stadium"]


def make_texts(count: int, seed: int = 8) -> list[str]:
    """Deterministic mixed Chinese/English messages."""
    rng = random.Random(seed)
    return [rng.choice(TEMPLATES).format(city=rng.choice(CITIES),
                                         district=rng.choice(DISTRICTS),
                                         site=rng.choice(SITES)) for _ in range(count)]


def _encode_texts(texts: list[str], refs: ReferenceAllocator) -> tuple[float, int]:
    start = time.perf_counter()
    parts = 0
    for text in texts:
        msg = segment(text, ref=refs.next(8))
        parts += len(encode_submit("+8613800138000", msg, status_report=True))
    return time.perf_counter() - start, parts


def _encode_pdus(submits: list[SubmitSm]) -> tuple[float, int]:
    start = time.perf_counter()
    octets = 0
    for seq, pdu in enumerate(submits, 1):
        octets += len(encode_pdu(replace(pdu, sequence_number=seq)))
    return time.perf_counter() - start, octets


def main() -> None:
    """Time the two workloads (best of ``ROUNDS``, the machine is shared) and print figures."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 45_000
    texts = make_texts(count)
    refs = ReferenceAllocator()
    submits = [build_submits("+8613800138000", t, ref=refs.next(8))[0] for t in texts]
    encode_s, parts = min(_encode_texts(texts, refs) for _ in range(ROUNDS))
    pdu_s, octets = min(_encode_pdus(submits) for _ in range(ROUNDS))
    print(f"messages={count} tpdu_parts={parts} segment+encode_s={encode_s:.3f} (best of {ROUNDS})")
    print(f"submit_sm={len(submits)} octets={octets} encode_s={pdu_s:.3f} (best of {ROUNDS})")
    print(f"encode_per_s={count / encode_s:.0f} submit_pdu_per_s={len(submits) / pdu_s:.0f}")


if __name__ == "__main__":
    main()
