"""The [radio] section: gateways and talkgroups validated, bad files refused naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dispatch.config import ConfigError, parse_settings

ROOT = Path(__file__).resolve().parents[2]
GOOD: dict[str, Any] = {"radio": {
    "gateways": [{"name": "tetra1", "kind": "tetra", "device": "/dev/ttyUSB0", "issi": "1001"},
                 {"name": "sat1", "kind": "satphone", "device": "/dev/ttyUSB1"}],
    "talkgroups": [{"name": "fire", "gssi": "9001", "gateway": "tetra1"}]}}


def problems(radio: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"radio": radio}, "d.toml")
    return caught.value.problems


def test_a_good_section_and_its_defaults() -> None:
    radio = parse_settings(GOOD, "d.toml").radio
    assert radio.gateways[0].baudrate == 115200 and radio.gateways[0].hang_time_s == 2.0
    assert radio.talkgroups[0].min_priority == "dispatcher"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda r: r["gateways"][0].update(colour="red"),
     "d.toml: radio.gateways[0].colour: unknown key"),
    (lambda r: r["talkgroups"][0].update(priority_rule="x"),
     "d.toml: radio.talkgroups[0].priority_rule: unknown key"),
    (lambda r: r.update(patches=[]), "d.toml: radio.patches: unknown key"),
    (lambda r: r["gateways"][0].update(kind="dmrx"), "d.toml: radio.gateways[0].kind: Input "
     "should be 'tetra', 'satphone', 'dmr', 'soundcard' or 'roip' (got 'dmrx')"),
    (lambda r: r["gateways"].append({"name": "bm", "kind": "dmr", "host": "h"}),
     "d.toml: radio.gateways[2]: radio gateway 'bm': a dmr gateway needs host, peer_id and "
     "password_file"),
    (lambda r: r["gateways"][0].pop("device"),
     "d.toml: radio.gateways[0]: radio gateway 'tetra1': a tetra gateway needs device"),
    (lambda r: r["talkgroups"][0].update(gateway="sat1"),
     "d.toml: radio: radio.talkgroups: 'fire' names gateway 'sat1', which is not a configured "
     "tetra, dmr, soundcard or roip gateway"),
    (lambda r: r["talkgroups"].append({"name": "fire2", "gssi": "9001", "gateway": "tetra1"}),
     "d.toml: radio: radio.talkgroups: GSSI 9001 is configured twice on gateway 'tetra1'"),
    (lambda r: r["gateways"][1].update(groups=["9005"]),
     "d.toml: radio.gateways[1]: radio gateway 'sat1': groups and issi are TETRA settings, not "
     "for a satphone"),
    (lambda r: r["talkgroups"].clear(),
     "d.toml: radio: radio.gateways: tetra gateway 'tetra1' carries no talkgroup (add a "
     "[[radio.talkgroups]] or groups = [...])"),
    (lambda r: r["talkgroups"][0].update(min_priority="god"),
     "d.toml: radio.talkgroups[0].min_priority: Input should be 'field_unit', 'dispatcher' or "
     "'commander' (got 'god')"),
])
def test_refusals_name_the_key(change: Any, expected: str) -> None:
    import copy

    radio = copy.deepcopy(GOOD["radio"])
    change(radio)
    assert problems(radio) == [expected]


def test_an_unknown_key_stops_the_daemon_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "d.toml"
    config.write_text('[[radio.gateways]]\nname = "t"\nkind = "tetra"\ndevice = "/dev/x"\n'
                      'squelch = 3\n')
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "run", "-c", str(config)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2
    assert "radio.gateways[0].squelch: unknown key" in run.stderr


def test_the_shipped_file_documents_the_section() -> None:
    text = (ROOT / "conf" / "dispatchd.toml").read_text()
    for key in ("[[radio.gateways]]", "[[radio.talkgroups]]", "min_priority", "emergency_priority",
                "hang_time_s", "tx_timeout_s"):
        assert key in text
