"""Hotline routing: normalisation, candidates, ringdowns, rewrites, config errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from telephony.routing import (
    ConfigError,
    RouteKind,
    Router,
    diversion_number,
    load_routing_settings,
    normalise_number,
)

CONFIG: dict[str, Any] = {
    "hotlines": [
        {"number": "110", "name_zh": "报警", "name_en": "Police", "queue": "police", "agency": "110"},
        {"number": "119", "name_zh": "火警", "name_en": "Fire", "queue": "fire", "agency": "119"},
        {"number": "120", "name_zh": "急救", "name_en": "Medical", "queue": "medical", "agency": "120"},
        {"number": "122", "name_zh": "交通事故", "name_en": "Traffic", "queue": "police", "agency": "122"},
        {"number": "12345", "name_zh": "政务服务", "name_en": "Gov service", "queue": "gov"},
        {"number": "88886666", "name_zh": "值班室", "name_en": "Duty desk", "queue": "gov",
         "priority": 5},
    ],
    "ringdowns": [
        {"name": "Hospital red phone", "caller": "87654321", "queue": "medical", "hotline": "120"},
        {"name": "Chem plant", "trunk": "pstn1", "line": "7", "queue": "fire", "priority": 40},
    ],
    "trunks": [
        {"name": "pstn1", "area_codes": ["010"],
         "rewrite": [{"match": r"9(\d{3,5})", "replace": r"\1"}, {"match": "4000", "replace": "110"}]},
    ],
    "routing": {"fallback": "12345"},
}
QUEUES = {"police", "fire", "medical", "gov"}


@pytest.fixture(name="router")
def _router() -> Router:
    return Router(load_routing_settings(CONFIG, QUEUES))


@pytest.mark.parametrize(
    ("raw", "codes", "expected"),
    [
        ("110", (), "110"),
        ("+86110", (), "110"),
        ("0086110", (), "110"),
        ("tel:+86-110", (), "110"),
        ("tel:110;phone-context=+86", (), "110"),
        ("sip:119@10.0.0.1;user=phone", (), "119"),
        ("(010) 8888-6666", ("010",), "88886666"),
        ("+86 10 8888 6666", ("010",), "88886666"),
        ("010", ("010",), "010"),  # nothing left after the area code: keep it
        ("12 345", (), "12345"),
        ("anonymous", (), ""),
        ("", (), ""),
        ("1" * 65, (), ""),
        ("11\x000", (), ""),
    ],
)
def test_normalise(raw: str, codes: tuple[str, ...], expected: str) -> None:
    assert normalise_number(raw, codes) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<sip:110@gw.example>;reason=unconditional", "sip:110@gw.example"),
        ("<tel:+86119>;reason=no-answer, <sip:1@x>", "tel:+86119"),
        ("sip:120@x;reason=user-busy", "sip:120@x"),
        ("", ""),
    ],
)
def test_diversion_number(value: str, expected: str) -> None:
    assert diversion_number(value) == expected


@pytest.mark.parametrize(
    ("kwargs", "kind", "called", "queue", "priority"),
    [
        ({"request_uri_user": "110"}, RouteKind.HOTLINE, "110", "police", 30),
        ({"request_uri_user": "+86119"}, RouteKind.HOTLINE, "119", "fire", 30),
        ({"request_uri_user": "0086120"}, RouteKind.HOTLINE, "120", "medical", 30),
        ({"request_uri_user": "122"}, RouteKind.HOTLINE, "122", "police", 20),
        ({"request_uri_user": "12345"}, RouteKind.HOTLINE, "12345", "gov", 10),
        # trunk pilot number in the R-URI, the dialled number in To
        ({"request_uri_user": "01088880000", "to_user": "119", "trunk": "pstn1"},
         RouteKind.HOTLINE, "119", "fire", 30),
        ({"request_uri_user": "999", "to_user": "", "diversion": "<sip:120@gw>;reason=unconditional"},
         RouteKind.HOTLINE, "120", "medical", 30),
        ({"request_uri_user": "010-8888-6666", "trunk": "pstn1"}, RouteKind.HOTLINE, "88886666", "gov", 5),
        ({"request_uri_user": "010-8888-6666"}, RouteKind.FALLBACK, "01088886666", "gov", 10),
        ({"request_uri_user": "9119", "trunk": "pstn1"}, RouteKind.HOTLINE, "119", "fire", 30),
        ({"request_uri_user": "4000", "trunk": "pstn1"}, RouteKind.HOTLINE, "110", "police", 30),
        ({"request_uri_user": "4000"}, RouteKind.FALLBACK, "4000", "gov", 10),
        ({"request_uri_user": "77777"}, RouteKind.FALLBACK, "77777", "gov", 10),
        ({}, RouteKind.FALLBACK, "", "gov", 10),
        ({"request_uri_user": "", "caller": "+86 10 8765 4321", "trunk": "pstn1"},
         RouteKind.RINGDOWN, "120", "medical", 30),
        ({"request_uri_user": "110", "caller": "87654321"}, RouteKind.RINGDOWN, "120", "medical", 30),
        ({"trunk": "pstn1", "line": "7"}, RouteKind.RINGDOWN, "", "fire", 40),
        ({"trunk": "pstn2", "line": "7", "request_uri_user": "110"}, RouteKind.HOTLINE, "110", "police", 30),
    ],
)
def test_route(router: Router, kwargs: dict[str, str], kind: RouteKind, called: str,
               queue: str, priority: int) -> None:
    route = router.route(**kwargs)
    assert (route.kind, route.called, route.queue, route.priority) == (kind, called, queue, priority)


def test_route_carries_hotline_names(router: Router) -> None:
    route = router.route(request_uri_user="tel:+86-119")
    assert (route.hotline.name_zh, route.hotline.name_en, route.hotline.agency) == ("火警", "Fire", "119")
    ringdown = router.route(trunk="pstn1", line="7")
    assert ringdown.ringdown is not None and ringdown.ringdown.name == "Chem plant"


def test_priorities_are_configurable() -> None:
    config = copy.deepcopy(CONFIG)
    config["hotlines"][4]["priority"] = 35
    route = Router(load_routing_settings(config)).route(request_uri_user="12345")
    assert route.priority == 35


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    config = copy.deepcopy(CONFIG)
    target: Any = config
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (["hotlines", 0, "number"], KeyError, "hotlines[0].number"),
        (["hotlines", 0, "number"], "11-0", "hotlines[0].number"),
        (["hotlines", 1, "number"], "110", "hotlines[1].number"),
        (["hotlines", 2, "queue"], "nowhere", "hotlines[2].queue"),
        (["hotlines", 2, "priority"], "high", "hotlines[2].priority"),
        (["hotlines", 2, "priority"], True, "hotlines[2].priority"),
        (["hotlines", 3, "colour"], "red", "hotlines[3].colour"),
        (["hotlines", 3], "110", "hotlines[3]"),
        (["ringdowns", 0, "caller"], KeyError, "ringdowns[0].caller"),
        (["ringdowns", 1, "trunk"], KeyError, "ringdowns[1].trunk"),
        (["ringdowns", 0, "queue"], "nowhere", "ringdowns[0].queue"),
        (["ringdowns", 0, "hotline"], "999", "ringdowns[0].hotline"),
        (["trunks", 0, "area_codes"], ["01x"], "trunks[0].area_codes[0]"),
        (["trunks", 0, "rewrite", 0, "match"], "9(", "trunks[0].rewrite[0].match"),
        (["trunks", 0, "rewrite", 0, "replace"], r"\2", "trunks[0].rewrite[0].replace"),
        (["trunks", 0, "name"], "", "trunks[0].name"),
        (["routing", "fallback"], "999", "routing.fallback"),
        (["routing"], KeyError, "routing.fallback"),
        (["hotlines"], {"number": "110"}, "hotlines"),
    ],
)
def test_config_errors_name_the_key(path: list[Any], value: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_routing_settings(_broken(path, value), QUEUES)
    assert info.value.key == key
    assert str(info.value).startswith(key + ": ")
