"""The media service in the daemon: [media] settings, health, metrics and hub events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from enginepeers import Peer, until

from dispatch.config import ConfigError, parse_settings
from dispatch.daemon import Daemon
from dispatch.events import Envelope


@pytest.mark.parametrize(("media", "expected"), [
    ({"port_min": 20001, "port_max": 20002}, "holds no even/odd RTP/RTCP port pair"),
    ({"bind_address": "0.0.0.0"}, "set advertise_address"),
    ({"bind_address": "media.example"}, "media.bind_address: 'media.example' is not an IPv4"),
    ({"dead_media_seconds": 0.5}, "media.dead_media_seconds: Input should be greater than"),
    ({"prompt_dir": "x"}, "media.prompt_dir: unknown key"),
])
def test_bad_media_settings_are_one_clear_line(media: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"media": media}, "dispatchd.toml")
    assert len(err.value.problems) == 1
    assert expected in err.value.problems[0] and "dispatchd.toml" in err.value.problems[0]


async def test_daemon_runs_media_with_health_metrics_and_events(
        tmp_path: Path, reactor: Any) -> None:
    settings = parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'd.db'}", "auto_migrate": True},
        "http": {"port": 0}, "ssh": {"enabled": False},
        "media": {"enabled": True, "port_min": 42000, "port_max": 42099,
                  "dead_media_seconds": 1.0, "recordings_dir": str(tmp_path / "rec")},
    }, "test")
    daemon = Daemon(settings, reactor=reactor)
    topics: list[str] = []
    daemon.hub.listen(lambda env: topics.append(env.topic) if isinstance(env, Envelope) else None)
    await daemon.start()
    peer = Peer(9)
    try:
        assert daemon.media is not None
        peer.use_answer(await daemon.media.anchor.answer("leg-1", peer.offer()))
        await daemon.media.anchor.join("call", "leg-1")
        assert daemon.media.engine.health()["recording"] == 0  # recorded from answer only
        daemon.media.engine.record("call")  # what the B2BUA does when the call is answered
        assert daemon.http.bound is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http.bound[1]}") as c:
            health = (await c.get("/health")).json()["services"]["media"]
            metrics = (await c.get("/metrics")).text
        assert health["state"] == "running" and health["detail"]["legs"] == 1
        assert health["detail"]["rooms"] == 1
        assert "dispatchd_media_legs 1.0" in metrics and "dispatchd_media_overruns_total" in metrics
        await until(lambda: "media.dead_media" in topics, "dead media on the hub")
    finally:
        peer.close()
        await daemon.stop()
    assert "media.recording_finished" in topics  # stopping sealed the room's recording
    assert list((tmp_path / "rec").glob("*/call-*.wav.sha256"))
