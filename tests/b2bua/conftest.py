"""Fixtures shared by the B2BUA tests (real daemons and SIPp peers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def started() -> Iterator[list[object]]:
    """Daemons and peers a test started; stopped (last first) whatever happens."""
    items: list[object] = []
    yield items
    for item in reversed(items):
        item.stop()  # type: ignore[attr-defined]
