"""Per-source admission: a token bucket and a failed-authentication blocker.

Both are sans-I/O: every call takes ``now``.  Both keep at most
``max_sources`` entries (least recently used evicted first), so a flood from
spoofed addresses cannot grow them without bound; eviction can only forget a
source's history, never block someone new.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["FailureBlocker", "TokenBucketLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBucketLimiter:
    """``rate`` requests per second per source with bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, *, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        """Take one token for ``source``; False when its bucket is empty."""
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[source] = bucket
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def retry_after(self, source: str) -> int:
        """Seconds until ``source`` has a token again (at least 1)."""
        bucket = self._buckets.get(source)
        missing = 1 - (bucket.tokens if bucket is not None else self.burst)
        return max(1, int(missing / self.rate + 0.999))


class FailureBlocker:
    """Block a source for ``block_for`` seconds after ``max_failures`` in ``window``."""

    def __init__(
        self, max_failures: int, window: float, block_for: float, *, max_sources: int = 65536
    ) -> None:
        if max_failures < 1 or window <= 0 or block_for <= 0:
            raise ValueError("max_failures >= 1, window > 0 and block_for > 0 needed")
        self.max_failures = max_failures
        self.window = window
        self.block_for = block_for
        self.max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}

    def is_blocked(self, source: str, now: float) -> bool:
        """True while ``source`` is blocked."""
        until = self._blocked.get(source)
        if until is None:
            return False
        if now >= until:
            del self._blocked[source]
            return False
        return True

    def blocked_until(self, source: str) -> float | None:
        """When the block of ``source`` ends, or None."""
        return self._blocked.get(source)

    def record_failure(self, source: str, now: float) -> bool:
        """Count a failure; True when this one blocks the source."""
        stamps = self._failures.get(source)
        if stamps is None:
            stamps = self._failures[source] = deque()
            while len(self._failures) > self.max_sources:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(source)
        stamps.append(now)
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if len(stamps) >= self.max_failures:
            del self._failures[source]
            self._blocked[source] = now + self.block_for
            if len(self._blocked) > self.max_sources:
                self._prune(now)
            return True
        return False

    def record_success(self, source: str) -> None:
        """A good authentication clears the source's failure history."""
        self._failures.pop(source, None)

    def _prune(self, now: float) -> None:
        for source, until in list(self._blocked.items()):
            if until <= now:
                del self._blocked[source]
