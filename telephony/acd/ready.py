"""The ready agents of one queue, kept in offer order (an ordered ready-set).

Picking an agent used to rank every ready member for every call (O(n) per
call, O(n log n) with the sort): at 2,000 call takers that was thousands of
tuples per offered call.  Here the members in READY are held in a list sorted
by their *rank key* ``(penalty, idle since, agent id)``, maintained with
``bisect`` as agents move in and out of READY, so the best agent is the head of
the list and a pick only walks past the agents that already declined the call
(a handful at most): O(log n) to keep, O(declined + 1) to pick.

The key is computed once, when the agent becomes READY: an agent's penalty and
idle time cannot change while it stays READY (the engine only sets them while
the agent is logged out, busy or wrapping up), and the stored key is what
removal looks up, so the list can never hold a stale entry.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterator

__all__ = ["RankKey", "ReadySet"]

RankKey = tuple[int, float, str]
"""(penalty in this queue, idle since, agent id): lower is offered first."""


class ReadySet:
    """Agent ids in READY for one queue, iterated best first."""

    __slots__ = ("_keys", "_by_agent")

    def __init__(self) -> None:
        self._keys: list[RankKey] = []
        self._by_agent: dict[str, RankKey] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._by_agent

    def __iter__(self) -> Iterator[str]:
        """Agent ids, best first."""
        return (key[2] for key in self._keys)

    def add(self, agent_id: str, penalty: int, idle_since: float) -> None:
        """Agent ``agent_id`` became READY (re-adding replaces its old key)."""
        self.discard(agent_id)
        key = (penalty, idle_since, agent_id)
        bisect.insort(self._keys, key)
        self._by_agent[agent_id] = key

    def discard(self, agent_id: str) -> None:
        """Agent ``agent_id`` left READY (no-op when it was not there)."""
        key = self._by_agent.pop(agent_id, None)
        if key is None:
            return
        i = bisect.bisect_left(self._keys, key)
        del self._keys[i]

    def best(self, declined: Collection[str]) -> str | None:
        """The longest-idle agent of the lowest penalty that has not declined the call;
        if every ready agent declined it, the best of them anyway (None when empty)."""
        for _penalty, _idle, agent_id in self._keys:
            if agent_id not in declined:
                return agent_id
        return self._keys[0][2] if self._keys else None

    def best_group(self, declined: Collection[str]) -> list[str]:
        """Ring-all: every agent that shares the best agent's rank (declined or not, and
        penalty), best first."""
        first = self.best(declined)
        if first is None:
            return []
        penalty = self._by_agent[first][0]
        was_declined = first in declined
        start = bisect.bisect_left(self._keys, (penalty, float("-inf"), ""))
        group: list[str] = []
        for key in self._keys[start:]:
            if key[0] != penalty:
                break
            if (key[2] in declined) == was_declined:
                group.append(key[2])
        return group
