"""Prometheus metrics at ``/metrics``.

One :class:`Metrics` object per daemon, with its own registry (no process
globals), so tests can run several daemons in one process.  Gauges that
mirror live state (service health, event subscribers) are read at scrape
time through a custom collector rather than updated on every change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _LiveCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]], version: str, node: str) -> None:
        self._snapshot = snapshot
        self._version = version
        self._node = node

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot()
        info = InfoMetricFamily("dispatchd_build", "dispatchd version and node")
        info.add_metric([], {"version": self._version, "node": self._node})
        yield info
        up = GaugeMetricFamily(
            "dispatchd_service_up", "1 if the service is running", labels=["service", "required"]
        )
        for name, item in snap["services"].items():
            running = 1.0 if item["state"] == "running" else 0.0
            up.add_metric([name, str(item["required"]).lower()], running)
        yield up
        yield GaugeMetricFamily("dispatchd_ready", "1 if every required service runs",
                                value=1.0 if snap["ready"] else 0.0)
        yield GaugeMetricFamily("dispatchd_event_subscribers", "live event subscriptions",
                                value=float(snap["subscribers"]))
        events = GaugeMetricFamily("dispatchd_events_published", "events published by topic",
                                   labels=["topic"])
        for topic, count in sorted(snap["published"].items()):
            events.add_metric([topic], float(count))
        yield events


class Metrics:
    """The daemon's metrics registry and the instruments shared by its parts."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], *, version: str, node: str) -> None:
        """``snapshot`` returns ``ready``, ``services``, ``subscribers`` and ``published``."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_LiveCollector(snapshot, version, node))
        self.http_requests = Counter(
            "dispatchd_http_requests", "HTTP requests by route and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.http_seconds = Histogram(
            "dispatchd_http_request_seconds", "HTTP request latency", ["route"],
            registry=self.registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
