"""``dispatchd`` as a real process: start, signals, restart, failures, exit codes."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import tty
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemonproc import DaemonProcess
from pgserver import fresh_pg_url

from dispatch.storage import schema_head


def write_config(path: Path, extra: str = "", port: int = 0) -> Path:
    path.write_text(f'[http]\nport = {port}\n[ssh]\nport = 0\n[log]\nlevel = "info"\n{extra}')
    return path


@pytest.fixture
def procs() -> Iterator[list[DaemonProcess]]:
    """Daemons started by a test, killed at the end whatever happens."""
    started: list[DaemonProcess] = []
    yield started
    for p in started:
        p.kill()


def start(procs: list[DaemonProcess], cwd: Path, config: Path | None) -> DaemonProcess:
    p = DaemonProcess(cwd, config)
    procs.append(p)
    return p


def admin_token(cwd: Path, config: Path) -> str:
    """Create an admin with the CLI (as an administrator would) and get an API token."""
    env = {**os.environ}
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "user", "add", "admin", "--role",
                          "admin", "-c", str(config)], input="admin-password\n", text=True,
                         capture_output=True, cwd=cwd, timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "user", "token", "admin",
                          "--label", "test", "-c", str(config)], text=True,
                         capture_output=True, cwd=cwd, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_sigterm_stops_cleanly_and_data_survives_restart(tmp_path: Path,
                                                         procs: list[DaemonProcess]) -> None:
    config = write_config(tmp_path / "d.toml")
    token = admin_token(tmp_path, config)
    headers = {"Authorization": f"Bearer {token}"}
    first = start(procs, tmp_path, config)
    first.wait_ready()
    assert httpx.get(first.url + "/health").status_code == 200
    r = httpx.post(first.url + "/api/v1/duty-log", headers=headers,
                   json={"text": "written before SIGTERM"})
    assert r.status_code == 201
    code, took = first.stop()
    assert code == 0 and took < 5.0
    assert any(line.get("msg") == "dispatchd stopped" for line in first.lines)
    assert (tmp_path / "var" / "dispatchd.db").exists()

    second = start(procs, tmp_path, config)
    second.wait_ready()
    rows = httpx.get(second.url + "/api/v1/duty-log", headers=headers).json()
    assert [row["text"] for row in rows] == ["written before SIGTERM"]
    code, _ = second.stop()
    assert code == 0


def test_runs_on_embedded_defaults_without_any_file(tmp_path: Path,
                                                    procs: list[DaemonProcess]) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.skip("port 8080 is in use on this machine; the default cannot be tested")
    p = start(procs, tmp_path, None)
    assert p.wait_ready() == 8080
    health = httpx.get("http://127.0.0.1:8080/health").json()
    assert health["ready"] and health["services"]["database"]["detail"]["dialect"] == "sqlite"
    assert (tmp_path / "var" / "dispatchd.db").exists()
    assert p.stop()[0] == 0


def test_bad_config_exits_2_with_a_line_per_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nport = 70000\nhost = 127\n[lgo]\nlevel = "info"\n')
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "run", "-c", str(bad)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert sorted(line.split(": ")[1] for line in lines) == ["http.host", "http.port", "lgo"]
    assert not (tmp_path / "var").exists(), "nothing may be touched on a bad config"


def test_required_service_failure_exits_1(tmp_path: Path, procs: list[DaemonProcess]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = start(procs, tmp_path, write_config(tmp_path / "d.toml", port=port))
        assert p.proc.wait(30) == 1
        p.read_until(lambda e: False)
    errors = [e["msg"] for e in p.lines if e.get("level") == "error"]
    assert f"required service http failed to start: cannot listen on 127.0.0.1:{port}: " \
           "Address already in use" in errors


def test_missing_optional_device_is_reported_required_one_stops(
        tmp_path: Path, procs: list[DaemonProcess]) -> None:
    device = '[[devices]]\nname = "sat1"\nport = "{port}"\nrequired = {req}\nretry_s = 0.2\n'
    missing = tmp_path / "ttyUSB9"
    config = write_config(tmp_path / "d.toml", device.format(port=missing, req="false"))
    p = start(procs, tmp_path, config)
    p.wait_ready()
    health = httpx.get(p.url + "/health").json()
    sat = health["services"]["device:sat1"]
    assert health["ready"] is True and sat["state"] == "failed"
    assert str(missing) in sat["last_error"]
    # The device appears (a pty where the adapter would be): the retry picks it up.
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.symlink(os.ttyname(slave), missing)
    try:
        p.read_until(lambda e: e.get("msg") == "service started" and e.get("service") ==
                     "device:sat1", timeout=20)
        assert httpx.get(p.url + "/health").json()["services"]["device:sat1"]["state"] == "running"
    finally:
        os.close(master)
        os.close(slave)
    assert p.stop()[0] == 0

    required = write_config(tmp_path / "r.toml", device.format(port=tmp_path / "gone", req="true"))
    q = start(procs, tmp_path, required)
    assert q.proc.wait(30) == 1
    q.read_until(lambda e: False)
    assert any("required service device:sat1 failed to start" in e.get("msg", "")
               for e in q.lines)


def test_sighup_reloads_what_it_can_and_names_what_needs_restart(
        tmp_path: Path, procs: list[DaemonProcess]) -> None:
    config = write_config(tmp_path / "d.toml")
    p = start(procs, tmp_path, config)
    p.wait_ready()
    config.write_text('[http]\nport = 9\n[ssh]\nport = 0\n[log]\nlevel = "debug"\n')
    p.signal(signal.SIGHUP)
    line = p.read_until(lambda e: e.get("msg") == "changed settings need a restart to take effect")
    assert line is not None and line["needs_restart"] == ["http.port"]
    assert any(e.get("msg") == "configuration reloaded" and e["applied"] == ["log.level"]
               for e in p.lines)
    config.write_text("[http]\nport = 70000\n[ssh]\nport = 0\n")
    p.signal(signal.SIGHUP)
    line = p.read_until(lambda e: "reload refused" in e.get("msg", ""))
    assert line is not None and "http.port" in line["msg"]
    assert httpx.get(p.url + "/health").status_code == 200, "still serving on the old settings"
    assert p.stop()[0] == 0


def test_db_commands(tmp_path: Path) -> None:
    config = tmp_path / "d.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    cli = [sys.executable, "-m", "dispatch.cli", "db"]
    run = subprocess.run(cli + ["current", "-c", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and "needs `dispatchd db upgrade`" in run.stdout
    run = subprocess.run(cli + ["upgrade", "-c", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == f"schema empty -> {schema_head()}"
    run = subprocess.run(cli + ["current", "-c", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert "up to date" in run.stdout
    assert json.loads(subprocess.run(
        [sys.executable, "-m", "dispatch.cli", "check-config", str(config)],
        capture_output=True, text=True, timeout=60).stdout)["http"]["port"] == 8080


def test_postgresql_schema_must_be_upgraded_deliberately_then_data_survives(
        tmp_path: Path, procs: list[DaemonProcess], pg_server: object) -> None:
    url = fresh_pg_url(pg_server)  # type: ignore[arg-type]
    config = write_config(tmp_path / "pg.toml", f'[database]\nurl = "{url}"\n')
    refused = start(procs, tmp_path, config)
    assert refused.proc.wait(30) == 1
    refused.read_until(lambda e: False)
    assert any("run `dispatchd db upgrade -c CONFIG`" in e.get("msg", "") for e in refused.lines)

    upgrade = subprocess.run([sys.executable, "-m", "dispatch.cli", "db", "upgrade", "-c",
                              str(config)], capture_output=True, text=True, timeout=60)
    assert upgrade.returncode == 0, upgrade.stderr
    token = admin_token(tmp_path, config)
    headers = {"Authorization": f"Bearer {token}"}
    first = start(procs, tmp_path, config)
    first.wait_ready()
    assert httpx.get(first.url + "/health").json()["services"]["database"]["detail"] == {
        "dialect": "postgresql", "schema": schema_head()}
    assert httpx.post(first.url + "/api/v1/duty-log", headers=headers,
                      json={"text": "PostgreSQL row"}).status_code == 201
    assert first.stop()[0] == 0
    second = start(procs, tmp_path, config)
    second.wait_ready()
    rows = httpx.get(second.url + "/api/v1/duty-log", headers=headers).json()
    assert [row["text"] for row in rows] == ["PostgreSQL row"]
    assert second.stop()[0] == 0


def test_user_key_cli(tmp_path: Path) -> None:
    config = tmp_path / "d.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    cli = [sys.executable, "-m", "dispatch.cli", "user"]
    run = subprocess.run(cli + ["add", "lead", "--role", "supervisor", "-c", str(config)],
                         input="lead-password\n", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True, timeout=60)
    run = subprocess.run(cli + ["key", "lead", str(tmp_path / "k.pub"), "-c", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("key SHA256:"), run.stderr
    run = subprocess.run(cli + ["key", "lead", str(tmp_path / "k"), "-c", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "that is a private key" in run.stderr
    (tmp_path / "junk.pub").write_text("ssh-ed25519 not-base64!!")
    run = subprocess.run(cli + ["key", "lead", str(tmp_path / "junk.pub"), "-c", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "cannot use" in run.stderr
    run = subprocess.run(cli + ["add", "x", "--role", "admin", "-c", str(config)],
                         input="short\n", capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "password must be 8 to 1024 characters" in run.stderr
