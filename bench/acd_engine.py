"""Benchmark the ACD engine: 2,000 concurrent queued calls over 200 agents.

A scripted B2BUA drives the engine with a simulated clock: calls arrive in
the first 20 s, 90 % of offers are answered after 1-4 s, 5 % fail, the rest
ring out; talks last 30-90 s; a fifth of callers give up after 30-300 s;
agents set not_ready come back after 30 s.  Prints engine inputs per wall
second; the last line is ``acd_events_per_s=N``.

    python bench/acd_engine.py [--calls 2000] [--agents 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import sys
import time
from collections.abc import Callable
from functools import partial

from telephony.acd import (
    AcdEngine,
    AcdSettings,
    AgentMembership,
    AgentSettings,
    AgentState,
    AgentStateChanged,
    CallFinished,
    Connect,
    QueueSettings,
    RingAgent,
    Strategy,
)

HOTLINES = (("110", "police", 30), ("119", "fire", 30), ("120", "medical", 30),
            ("122", "police", 20), ("12345", "gov", 10))


def build(agents: int) -> AcdEngine:
    """Four queues; every agent in two of them."""
    queues = (
        QueueSettings("police", max_wait=120.0, overflow_queue="gov", wrap_up=5.0),
        QueueSettings("fire", strategy=Strategy.RING_ALL, wrap_up=5.0),
        QueueSettings("medical", wrap_up=5.0),
        QueueSettings("gov", wrap_up=5.0),
    )
    names = [q.name for q in queues]
    return AcdEngine(AcdSettings(queues, tuple(
        AgentSettings(
            f"a{i}",
            queues=(AgentMembership(names[i % 4]), AgentMembership(names[(i + 1) % 4], 1)),
        )
        for i in range(agents)
    )))


def run(calls: int, agents: int, seed: int) -> tuple[int, int, int, int, float]:
    """Simulate; return (inputs, actions out, calls finished, peak live calls, wall seconds)."""
    rng = random.Random(seed)
    acd = build(agents)
    todo: list[tuple[float, int, Callable[[float], None]]] = []
    order = itertools.count()

    def at(when: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(todo, (when, next(order), fn))

    for i in range(agents):
        at(0.0, partial(acd.agent_login, f"a{i}"))
    for n in range(calls):
        number, queue, priority = rng.choice(HOTLINES)
        t = rng.uniform(0.0, 20.0)
        at(t, partial(acd.call_arrived, f"c{n}", "13800000000", number, queue, priority))
        if rng.random() < 0.2:
            at(t + rng.uniform(30.0, 300.0), partial(acd.call_abandoned, f"c{n}"))

    def react(event: object, now: float) -> None:
        if isinstance(event, RingAgent):
            r = rng.random()
            if r < 0.9:
                answer = partial(acd.agent_answered, event.call_id, event.agent_id)
                at(now + rng.uniform(1.0, 4.0), answer)
            elif r < 0.95:
                at(now + 1.0, partial(acd.agent_rejected, event.call_id, event.agent_id))
        elif isinstance(event, Connect):
            at(now + rng.uniform(30.0, 90.0), partial(acd.call_ended, event.call_id))
        elif isinstance(event, AgentStateChanged) and event.new is AgentState.NOT_READY:
            at(now + 30.0, partial(ready_again, event.agent_id))

    def ready_again(agent_id: str, now: float) -> None:
        if acd.agent_status(agent_id).state is AgentState.NOT_READY:
            acd.agent_state(agent_id, AgentState.READY, now)

    inputs = actions = finished = peak = 0
    started = time.perf_counter()
    while True:
        timer = acd.get_timer()
        if todo and (timer is None or todo[0][0] <= timer):
            now, _, fn = heapq.heappop(todo)
            fn(now)
        elif timer is not None:
            now = timer
            acd.handle_timer(now)
        else:
            break
        inputs += 1
        if inputs % 64 == 0:  # sampled: counting every step would dominate the figure
            peak = max(peak, len(acd.live_calls()))
        for event in acd.events():
            actions += 1
            finished += isinstance(event, CallFinished)
            react(event, now)
    return inputs, actions, finished, peak, time.perf_counter() - started


def main() -> int:
    """Run the benchmark and print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    inputs, actions, finished, peak, wall = run(args.calls, args.agents, args.seed)
    out = sys.stdout
    out.write(f"calls={args.calls} agents={args.agents} finished={finished}")
    out.write(f" peak_live_calls~{peak}\n")
    out.write(f"engine_inputs={inputs} actions_out={actions} wall_s={wall:.3f}\n")
    out.write(f"acd_actions_per_s={actions / wall:.0f}\n")
    out.write(f"acd_events_per_s={inputs / wall:.0f}\n")
    return 0 if finished == args.calls else 1


if __name__ == "__main__":
    raise SystemExit(main())
