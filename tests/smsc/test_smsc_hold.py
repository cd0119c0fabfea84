"""SmppClient.hold: a node unsure whether it was taken over writes nothing (real simulator).

A clustered node that wakes from a stall holds its binds until its heartbeat
settles whether it is still itself (dispatch/fencing.py); submits queued
meanwhile wait, and the ones its campaign sender then abandons are never sent.
"""

from __future__ import annotations

import asyncio

from smscpeer import SmscSim
from test_smsc_transport import bound_client

from sms.transport import SubmitHandle


async def test_held_submits_wait_and_abandoned_ones_are_never_written(smsc: SmscSim) -> None:
    client = await bound_client(smsc.port)
    held = True
    client.hold = lambda: held
    try:
        waiting = asyncio.ensure_future(client.submit("+8613800000001", "撤离"))
        for _ in range(5):
            await asyncio.sleep(0)  # the pump runs, finds the hold, writes nothing
        assert (await smsc.stats()).get("submit_sm", 0) == 0 and not waiting.done()
        held = False
        handle = await asyncio.wait_for(waiting, 10)
        assert isinstance(handle, SubmitHandle) and len(handle.message_ids) == 1

        held = True
        abandoned = asyncio.ensure_future(client.submit("+8613800000002", "撤离"))
        for _ in range(5):
            await asyncio.sleep(0)
        abandoned.cancel()  # the campaign sender abandons its batch (it was taken over)
        held = False
        await asyncio.wait_for(client.submit("+8613800000003", "撤离"), 10)
        stats = await smsc.stats()
        assert stats["submit_sm"] == 2, stats  # 1 and 3; 2 never left the queue
    finally:
        await client.stop(timeout=5)
