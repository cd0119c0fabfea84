"""replace_if_present and service_type on the wire, against the simulator's own count.

The simulator holds messages until ``flush``; a second submit with the flag and
the same service_type replaces the held one (the handset sees one message),
without the flag or with another tag it is a second message.  Long Chinese
messages are replaced part by part.
"""

from __future__ import annotations

import json
from pathlib import Path

from smscpeer import PASSWORD, SYSTEM_ID, SmscFactory

from sms.smpp import SessionSettings
from sms.transport import SmppClient, SmppSettings

LONG = "【应急】东江水位超警戒，沿江低洼地带居民请立即撤离至镇中心小学，携带证件和药品，听从指挥。" * 2


async def test_replace_if_present_replaces_only_a_held_message_with_the_same_tag(
        smsc_factory: SmscFactory, tmp_path: Path) -> None:
    sim = await smsc_factory("--hold", "-1")
    client = SmppClient(SmppSettings(name="t", host="127.0.0.1", port=sim.port,
                                     system_id=SYSTEM_ID, password=PASSWORD, source="12110",
                                     session=SessionSettings(window=5)))
    await client.start()
    await client.wait_bound(20)
    try:
        a, b, c, d = (f"+8613800000{i:03d}" for i in range(4))
        await client.submit(a, "first", service_type="TAG01")
        await client.submit(a, "second", service_type="TAG01", replace_if_present=True)
        await client.submit(b, "first", service_type="TAG01")
        await client.submit(b, "again", service_type="TAG01")  # no flag: a second message
        await client.submit(c, "first", service_type="TAG01")
        await client.submit(c, "other", service_type="TAG02", replace_if_present=True)
        long_ids = await client.submit(d, LONG, service_type="TAG01")
        again = await client.submit(d, LONG, service_type="TAG01", replace_if_present=True)
        assert len(long_ids.message_ids) == len(again.message_ids) == 2
        stats = await sim.stats()
        assert stats["replaced"] == 1 + 2
        assert stats["replace_not_held"] == 1
        dump = tmp_path / "d.json"
        await sim.command(f"dump {dump}")
        assert json.loads(dump.read_text()) == {a[1:]: 1, b[1:]: 2, c[1:]: 2, d[1:]: 1}
        await sim.command("flush")
        await client.submit(a, "after delivery", service_type="TAG01", replace_if_present=True)
        stats = await sim.stats()
        assert stats["replace_not_held"] == 2, "a delivered message cannot be replaced"
        assert stats["per_dest"] == {"2": 3, "1": 1}
    finally:
        await client.stop()
