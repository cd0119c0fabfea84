"""Schemathesis fuzzes the daemon's own OpenAPI document: no input may cause a 500.

A real ``dispatchd run`` process (SQLite) serves ``/openapi.json``; every
operation in it gets generated requests - valid ones, and ones that break the
schema - sent with an administrator's token, so the handlers behind the auth
check are reached.  The only check is the one the issue names: no response is a
server error.  Schemathesis runs as its own command line, as an operator
would run it against a deployment.  The per-operation example count is bounded so the suite stays
fast on a shared machine; ``DISPATCHD_TEST_FUZZ_EXAMPLES`` raises it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemonproc import DaemonProcess
from test_daemon_process import admin_token, write_config

EXAMPLES = int(os.environ.get("DISPATCHD_TEST_FUZZ_EXAMPLES", "20"))
# Logging out would revoke the fuzzer's own token and turn the rest into 401s.
SKIPPED_PATHS = {"/api/v1/auth/logout"}


@pytest.fixture(scope="module")
def running_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    cwd = tmp_path_factory.mktemp("fuzz")
    config = write_config(cwd / "d.toml")
    token = admin_token(cwd, config)
    proc = DaemonProcess(cwd, config, env={"DISPATCHD_WEBHOOK_SECRET": "fuzz-secret"})
    try:
        proc.wait_ready()
        yield proc.url, token
        code, _ = proc.stop()
        assert code == 0, "the daemon did not survive the fuzzing and stop cleanly"
    finally:
        proc.kill()


def test_no_input_makes_the_api_fail_with_a_server_error(
        running_daemon: tuple[str, str], tmp_path: Path) -> None:
    url, token = running_daemon
    cli = Path(sys.executable).with_name("schemathesis")
    argv = [str(cli), "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
            "--header", f"Authorization: Bearer {token}", "--max-examples", str(EXAMPLES),
            "--workers", "1", "--request-timeout", "20", "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path)]
    for path in sorted(SKIPPED_PATHS):
        argv += ["--exclude-path", path]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    report = next(tmp_path.glob("*.xml")).read_text()
    assert "/api/v1/reports" in report and "/api/v1/campaigns" in report, report[:2000]


def test_the_openapi_document_lists_the_api(running_daemon: tuple[str, str]) -> None:
    url, _ = running_daemon
    doc = httpx.get(f"{url}/openapi.json", timeout=10).json()
    paths = set(doc["paths"])
    assert {"/health", "/api/v1/reports", "/api/v1/campaigns", "/api/v1/auth/login"} <= paths
