"""Configuration: strict validation, one clear line per problem, docs in sync."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dispatch.config import (
    ConfigError,
    Settings,
    changed_keys,
    effective_settings,
    load_settings,
    mask_url,
    parse_settings,
    read_districts,
)

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    """The problem lines a TOML document gives."""
    with pytest.raises(ConfigError) as err:
        parse_settings(tomllib.loads(text), "f.toml")
    return err.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[http]\nport = 70000", "f.toml: http.port: Input should be less than or equal to 65535 (got 70000)"),
        ("[http]\nport = -1", "f.toml: http.port: Input should be greater than or equal to 0 (got -1)"),
        ('[http]\nport = "8080"', "f.toml: http.port: Input should be a valid integer (got '8080')"),
        ("[http]\nport = true", "f.toml: http.port: Input should be a valid integer (got True)"),
        ("[http]\nbogus = 1", "f.toml: http.bogus: unknown key"),
        ("colour = 1", "f.toml: colour: unknown key"),
        ('[log]\nlevel = "loud"', "f.toml: log.level: Input should be 'debug', 'info', 'warning', 'error' or 'critical' (got 'loud')"),
        ('[database]\nurl = "mysql://x/y"', "f.toml: database.url: unsupported database 'mysql'; use sqlite:///PATH or postgresql://USER@HOST/DB (got 'mysql://x/y')"),
        ('[[devices]]\nname = "a"\nport = "/dev/x"\nbaudrate = "9600"', "f.toml: devices[0].baudrate: Input should be a valid integer (got '9600')"),
        ('[[devices]]\nport = "/dev/x"', "f.toml: devices[0].name: required key is missing"),
        ('[[devices]]\nname = "a"\nport = "/x"\n[[devices]]\nname = "a"\nport = "/y"', "f.toml: devices: name 'a' is used twice"),
        ('[node]\nname = "bad name!"', "f.toml: node.name: String should match pattern '^[A-Za-z0-9_.-]+$' (got 'bad name!')"),
    ],
)
def test_each_problem_is_one_line_naming_the_key(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_three_problems_three_lines() -> None:
    lines = problems('[http]\nport = 70000\nhost = 1\n[log]\nlevle = "info"')
    assert len(lines) == 3
    assert sorted(line.split(": ")[1] for line in lines) == ["http.host", "http.port", "log.levle"]


def test_missing_file_and_bad_toml_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "nope.toml")
    assert err.value.problems == [f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nport = 80\nhost = \n")
    with pytest.raises(ConfigError) as err:
        load_settings(bad)
    assert err.value.problems == [f"{bad}: invalid TOML: Invalid value (at line 3, column 8)"]
    bad.write_bytes(b"[http]\nhost = \"\xff\"\n")
    with pytest.raises(ConfigError) as err:
        load_settings(bad)
    assert "not UTF-8" in err.value.problems[0]


def test_embedded_defaults() -> None:
    s = load_settings(None)
    assert (s.http.host, s.http.port, s.log.level) == ("127.0.0.1", 8080, "info")
    assert s.database_url({}) == "sqlite:///var/dispatchd.db"
    assert s.auto_migrate(s.database_url({})) is True
    assert s.auto_migrate("postgresql://x@h/db") is False


def test_database_url_from_environment_and_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr/et\n")
    s = parse_settings({"database": {"url": "postgresql://app@db.local:5433/dispatch",
                                     "password_file": str(secret)}}, "f")
    assert s.database_url({}) == "postgresql://app:s3cr%2Fet@db.local:5433/dispatch"
    assert s.database_url({"DISPATCHD_DATABASE_URL": "sqlite:///x.db"}) == "sqlite:///x.db"
    assert mask_url("postgresql://app:pw@h:1/d") == "postgresql://app:***@h:1/d"


def test_effective_settings_mask_secrets(tmp_path: Path) -> None:
    s = parse_settings({"database": {"url": "postgresql://app:hunter22@h/d"}}, "f")
    shown = effective_settings(s)
    assert shown["database"]["url"] == "postgresql://app:***@h/d"
    assert "hunter22" not in repr(shown)


def test_changed_keys() -> None:
    a = Settings()
    b = parse_settings({"log": {"level": "debug"}, "http": {"port": 9000}}, "f")
    assert changed_keys(a, b) == ["http.port", "log.level"]
    assert changed_keys(a, a) == []


def _setting_paths(model: type, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        path = f"{prefix}{name}"
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            many = getattr(annotation, "__origin__", None) is tuple
            out += _setting_paths(inner, path + ("[]." if many else "."))
        else:
            out.append(path)
    return out


def test_shipped_config_is_valid_and_documents_every_setting() -> None:
    shipped = ROOT / "conf" / "dispatchd.toml"
    load_settings(shipped)
    text = shipped.read_text()
    readme = (ROOT / "README.md").read_text()
    for path in _setting_paths(Settings):
        key = path.rpartition(".")[2]
        # Every key is shown in the shipped file (set or commented) under its section...
        # (the telephony tables are TOML tables: `[routing]`, `[[hotlines]]` ...)
        shown = rf"^#?\s*({re.escape(key)}\s*=|\[\[?{re.escape(key)}\]\]?)"
        assert re.search(shown, text, re.M), f"{path} not in conf"
        # ...and in the README's configuration reference.
        assert f"`{path}`" in readme, f"{path} missing from README configuration reference"


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nport = 70000\nhost = 1\n[log]\nlevle = "info"\n')
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "check-config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{bad}: ") for line in lines)
    assert "Traceback" not in run.stderr
    good = tmp_path / "good.toml"
    good.write_text('[database]\nurl = "postgresql://a:topsecret@h/d"\n')
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "check-config", str(good)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "topsecret" not in run.stdout and '"url": "postgresql://a:***@h/d"' in run.stdout


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read"),
    ("{not json", "is not JSON"),
    ('{"type": "Feature"}', "not a GeoJSON FeatureCollection"),
    ('{"type": "FeatureCollection", "features": [{"properties": {}, "geometry": null}]}',
     "feature 0 has no properties.name"),
    ('{"type": "FeatureCollection", "features": [{"properties": {"name": "A"}, "geometry":'
     ' {"type": "Polygon", "coordinates": [[[200, 0], [1, 1], [0, 1], [200, 0]]]}}]}',
     "feature 0 (A) is not a valid Polygon"),
])
def test_a_bad_map_file_is_named_with_its_key(tmp_path: Path, content: str | None,
                                              says: str) -> None:
    geo = tmp_path / "districts.geojson"
    if content is not None:
        geo.write_text(content)
    config = tmp_path / "d.toml"
    config.write_text(f'[console]\ndistricts_geojson = "{geo}"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    [line] = err.value.problems
    assert line.startswith(f"{config}: console.districts_geojson: ") and says in line, line


def test_the_shipped_districts_load_for_the_map() -> None:
    doc = read_districts(str(ROOT / "conf" / "sms" / "districts.geojson"))
    assert {f["properties"]["name"] for f in doc["features"]} >= {"莞城街道", "南城街道"}
