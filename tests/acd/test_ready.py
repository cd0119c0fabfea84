"""The ordered ready-set picks exactly what ranking every ready agent picked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from telephony.acd.ready import ReadySet

AGENTS = [f"a{i}" for i in range(12)]


def brute(entries: dict[str, tuple[int, float]], declined: set[str],
          ring_all: bool) -> list[str]:
    """The engine's former pick: sort every ready agent by the full rank."""
    ranked = sorted(entries, key=lambda a: (a in declined, entries[a][0], entries[a][1], a))
    if not ranked:
        return []
    if not ring_all:
        return ranked[:1]
    best = (ranked[0] in declined, entries[ranked[0]][0])
    return [a for a in ranked if (a in declined, entries[a][0]) == best]


ops = st.lists(st.tuples(st.sampled_from(AGENTS), st.integers(0, 2),
                         st.integers(0, 5).map(float), st.booleans()), max_size=40)


@given(ops, st.sets(st.sampled_from(AGENTS)))
def test_pick_matches_full_ranking(steps: list[tuple[str, int, float, bool]],
                                   declined: set[str]) -> None:
    """Any sequence of READY/leave moves; both strategies pick as the full sort did."""
    ready = ReadySet()
    entries: dict[str, tuple[int, float]] = {}
    for agent, penalty, idle, joins in steps:
        if joins:
            ready.add(agent, penalty, idle)
            entries[agent] = (penalty, idle)
        else:
            ready.discard(agent)
            entries.pop(agent, None)
        assert len(ready) == len(entries)
        assert set(ready) == set(entries)
        best = ready.best(declined)
        assert ([] if best is None else [best]) == brute(entries, declined, False)
        assert ready.best_group(declined) == brute(entries, declined, True)


def test_best_first_iteration_and_membership() -> None:
    """Iteration is offer order; re-adding an agent moves it; discard of a stranger is a no-op."""
    ready = ReadySet()
    ready.add("b", 0, 5.0)
    ready.add("a", 0, 7.0)
    ready.add("c", 1, 1.0)
    assert list(ready) == ["b", "a", "c"]
    ready.add("b", 0, 9.0)
    assert list(ready) == ["a", "b", "c"] and "b" in ready and "z" not in ready
    ready.discard("z")
    assert ready.best({"a", "b"}) == "c"
    assert ready.best({"a", "b", "c"}) == "a"
    assert ready.best_group({"a"}) == ["b"]
