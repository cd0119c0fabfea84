"""The media engine as a daemon service: config, events, health and metrics.

:class:`MediaService` builds a :class:`~telephony.media.engine.MediaEngine`
from the ``[media]`` settings, starts its 20 ms clock with the daemon and
stops it (releasing every leg and sealing every recording) on shutdown.  The
SIP service takes :attr:`MediaService.anchor` (a
:class:`~telephony.media.anchor.MediaAnchor`) and subscribes to the engine's
events through :meth:`MediaService.subscribe`; every media event is also
published on the hub (topics ``media.*``) for consoles.  A failed recording
is logged as an error (an alarm), never a reason to drop the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dispatch.config import MediaSettings
from telephony.media.anchor import MediaAnchor, MediaCallback, MediaEvent, RecordingFailed
from telephony.media.engine import EngineSettings, MediaEngine

log = logging.getLogger(__name__)


def engine_settings(media: MediaSettings) -> EngineSettings:
    """The engine's settings from the validated ``[media]`` section."""
    return EngineSettings(
        bind_address=media.bind_address, advertise_address=media.advertise_address,
        port_min=media.port_min, port_max=media.port_max,
        dead_media_s=media.dead_media_seconds,
        recordings_dir=Path(media.recordings_dir) if media.record else None,
        record_on_answer=True,
        prompts_dir=Path(media.prompts_dir), symmetric_rtp=media.symmetric_rtp,
        max_legs=media.max_legs)


class MediaService:
    """Owns the node's media engine for the daemon."""

    name = "media"

    def __init__(self, settings: MediaSettings, publish: Callable[[object], object],
                 registry: CollectorRegistry | None = None) -> None:
        """``publish`` puts media events on the hub; ``registry`` gets the media metrics."""
        self.settings = settings
        self.engine = MediaEngine(engine_settings(settings))
        self._publish = publish
        self.engine.subscribe(self._on_event)
        if registry is not None:
            registry.register(_MediaCollector(self.engine))

    @property
    def anchor(self) -> MediaAnchor:
        """What the SIP B2BUA anchors its calls' media with."""
        return self.engine

    def subscribe(self, callback: MediaCallback) -> Callable[[], None]:
        """Dead media, DTMF and recording events for the SIP service; returns the unsubscriber."""
        return self.engine.subscribe(callback)

    def _on_event(self, event: MediaEvent) -> None:
        if isinstance(event, RecordingFailed):
            log.error("ALARM: call recording failed", extra={"room": event.room,
                                                             "path": event.path,
                                                             "error": event.error})
        self._publish(event)

    async def start(self) -> None:
        """Check the prompts directory and start the 20 ms clock."""
        prompts = Path(self.settings.prompts_dir)
        if not prompts.is_dir():
            log.warning("media: prompts_dir does not exist; prompts will fail",
                        extra={"prompts_dir": str(prompts)})
        await self.engine.start()

    async def stop(self) -> None:
        """Release every leg, seal recordings, stop the clock."""
        await self.engine.stop()

    def health(self) -> dict[str, Any]:
        """Rooms, legs, clock overruns and tick cost."""
        return self.engine.health()


class _MediaCollector(Collector):
    """Media gauges and counters read from the engine at scrape time."""

    def __init__(self, engine: MediaEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Any]:
        h = self._engine.health()
        for key, text in (("rooms", "rooms with media"), ("legs", "anchored legs"),
                          ("recording", "rooms being recorded")):
            yield GaugeMetricFamily(f"dispatchd_media_{key}", text, value=float(h[key]))
        yield GaugeMetricFamily("dispatchd_media_tick_seconds_p99",
                                "99th percentile of the mixer tick's cost",
                                value=h["tick_us_p99"] / 1e6)
        for key, text in (("ticks", "mixer ticks"), ("overruns", "20 ms ticks skipped"),
                          ("dead_media", "legs reported dead"), ("dtmf", "DTMF digits"),
                          ("recordings_failed", "recordings that failed"),
                          ("packets_rx", "RTP packets accepted"),
                          ("packets_rx_bad", "RTP datagrams malformed or oversized"),
                          ("packets_rx_foreign", "RTP packets from an unlatched source"),
                          ("packets_tx", "RTP packets sent")):
            yield CounterMetricFamily(f"dispatchd_media_{key}", text, value=float(h[key]))
