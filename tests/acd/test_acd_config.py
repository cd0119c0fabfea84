"""The suggested dispatchd.toml shape loads; every mistake names its key."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from telephony.acd import (
    AcdEngine,
    AgentMembership,
    CallQueued,
    ConfigError,
    FullAction,
    RingAgent,
    Strategy,
    load_acd_settings,
)
from telephony.routing import Router, load_routing_settings

SAMPLE = """
[acd]
preempt_priority = 30          # waiting calls at/above this report PreemptionWanted

[routing]
fallback = "12345"             # unknown called numbers go to this hotline's queue

[[hotlines]]
number = "110"
name_zh = "报警服务台"
name_en = "Police"
queue = "emergency"
agency = "110"
# priority defaults: 110/119/120 = 30, 122 = 20, 12345 = 10, others 0

[[hotlines]]
number = "119"
name_zh = "火警"
name_en = "Fire"
queue = "emergency"
agency = "119"

[[hotlines]]
number = "12345"
name_zh = "政务服务便民热线"
name_en = "Government service"
queue = "gov"

[[ringdowns]]
name = "Chemical plant red phone"
trunk = "pstn1"
line = "7"
queue = "emergency"
hotline = "119"
priority = 40

[[trunks]]
name = "pstn1"
area_codes = ["010"]
rewrite = [{ match = '9(\\d{3,5})', replace = '\\1' }]

[[queues]]
name = "emergency"
strategy = "ring_all"
ring_timeout = 12
max_wait = 20
overflow_queue = "backup"
max_length = 50
on_full = "overflow"
wrap_up = 15
no_answer_not_ready = true

[[queues]]
name = "backup"
ring_timeout = 15
wrap_up = 10

[[queues]]
name = "gov"
max_length = 100
on_full = "busy"
wrap_up = 30

[[agents]]
id = "ct01"
name = "接警员 01"
queues = ["emergency", "backup"]
penalties = { backup = 1 }

[[agents]]
id = "ct02"
queues = ["gov", "backup"]
"""


def test_sample_config_loads_and_routes_into_the_engine() -> None:
    data = tomllib.loads(SAMPLE)
    acd_settings = load_acd_settings(data)
    router = Router(load_routing_settings(data, {q.name for q in acd_settings.queues}))
    emergency = acd_settings.queues[0]
    assert (emergency.strategy, emergency.ring_timeout, emergency.max_wait) == (
        Strategy.RING_ALL, 12.0, 20.0)
    assert acd_settings.queues[2].on_full is FullAction.BUSY
    assert acd_settings.agents[0].queues == (
        AgentMembership("emergency", 0), AgentMembership("backup", 1))
    route = router.route(request_uri_user="9119", trunk="pstn1")
    acd = AcdEngine(acd_settings)
    acd.agent_login("ct01", now=0.0)
    acd.call_arrived("c1", "13800000000", route.hotline.number, route.queue, route.priority, now=1.0)
    events = [e for e in acd.events() if isinstance(e, (CallQueued, RingAgent))]
    assert events == [CallQueued("c1", "emergency", 1), RingAgent("c1", "ct01", "emergency", 12.0)]
    red = router.route(trunk="pstn1", line="7")
    assert (red.queue, red.priority, red.hotline.name_en) == ("emergency", 40, "Fire")


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    data: Any = tomllib.loads(SAMPLE)
    target = data
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = copy.deepcopy(value)
    return dict(data)


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (["queues", 0, "name"], KeyError, "queues[0].name"),
        (["queues", 1, "name"], "emergency", "queues[1].name"),
        (["queues", 0, "strategy"], "round_robin", "queues[0].strategy"),
        (["queues", 0, "ring_timeout"], 0, "queues[0].ring_timeout"),
        (["queues", 0, "ring_timeout"], "12s", "queues[0].ring_timeout"),
        (["queues", 0, "max_wait"], -5, "queues[0].max_wait"),
        (["queues", 0, "overflow_queue"], "nowhere", "queues[0].overflow_queue"),
        (["queues", 0, "overflow_queue"], "emergency", "queues[0].overflow_queue"),
        (["queues", 0, "overflow_queue"], KeyError, "queues[0].max_wait"),
        (["queues", 0, "max_length"], -1, "queues[0].max_length"),
        (["queues", 0, "on_full"], "drop", "queues[0].on_full"),
        (["queues", 0, "wrap_up"], -1, "queues[0].wrap_up"),
        (["queues", 0, "no_answer_not_ready"], "yes", "queues[0].no_answer_not_ready"),
        (["queues", 0, "ringtimeout"], 5, "queues[0].ringtimeout"),
        (["agents", 0, "id"], KeyError, "agents[0].id"),
        (["agents", 1, "id"], "ct01", "agents[1].id"),
        (["agents", 0, "queues"], ["emergency", "nowhere"], "agents[0].queues[1]"),
        (["agents", 0, "queues"], "emergency", "agents[0].queues"),
        (["agents", 0, "penalties"], {"gov": 1}, "agents[0].penalties.gov"),
        (["agents", 0, "penalties"], {"backup": -1}, "agents[0].penalties.backup"),
        (["acd", "preempt_priority"], "high", "acd.preempt_priority"),
        (["acd", "preempt"], 1, "acd.preempt"),
        (["queues"], {"name": "x"}, "queues"),
    ],
)
def test_acd_config_errors_name_the_key(path: list[Any], value: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_acd_settings(_broken(path, value))
    assert info.value.key == key
