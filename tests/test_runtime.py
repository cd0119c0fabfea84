"""The daemon's loop choice and garbage-collector settling (dispatch/runtime.py)."""

from __future__ import annotations

import asyncio
import gc
import sys
import tomllib
from collections.abc import Iterator

import pytest

from dispatch.config import ConfigError, parse_settings
from dispatch.runtime import GEN0_THRESHOLD, new_event_loop, settle_heap


def _close_after(loop: asyncio.AbstractEventLoop) -> str:
    try:
        return type(loop).__module__
    finally:
        loop.close()


def test_auto_runs_on_uvloop_when_installed_and_no_tls() -> None:
    """uvloop is part of the test environment (setup.cfg extra ``fast``)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - the environment is wrong
        pytest.fail("uvloop missing: pip install 'dispatchd[fast]'")
    assert _close_after(new_event_loop("auto")) == "uvloop"
    assert _close_after(new_event_loop("uvloop")) == "uvloop"
    assert _close_after(new_event_loop("auto", tls=True)).startswith("asyncio")


def test_asyncio_is_the_default_and_never_uvloop() -> None:
    """``asyncio`` (the default) never picks uvloop."""
    assert _close_after(new_event_loop()).startswith("asyncio")
    assert _close_after(new_event_loop("asyncio")).startswith("asyncio")
    assert parse_settings({}, "f.toml").node.event_loop == "asyncio"


def test_uvloop_refused_with_tls_and_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop with a TLS listener, or without the package: a clear error; auto falls back."""
    with pytest.raises(ValueError, match="SIP over TLS does not work on uvloop"):
        new_event_loop("uvloop", tls=True)
    with pytest.raises(ValueError, match="unknown event loop"):
        new_event_loop("trio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import raises ImportError
    assert _close_after(new_event_loop("auto")).startswith("asyncio")
    with pytest.raises(ValueError, match="uvloop is not installed"):
        new_event_loop("uvloop")


TLS_SIP = ('[sip]\nenabled = true\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
           'listen = [{transport = "tls", host = "127.0.0.1", port = 5061}]\n'
           '[routing]\nfallback = "110"\n[[hotlines]]\nnumber = "110"\nqueue = "police"\n'
           '[[queues]]\nname = "police"\n')


def test_event_loop_setting_is_checked_in_the_config() -> None:
    """A wrong value, or uvloop with a TLS listener, is one line naming ``node.event_loop``."""
    with pytest.raises(ConfigError) as err:
        parse_settings(tomllib.loads('[node]\nevent_loop = "gevent"'), "f.toml")
    assert err.value.problems == [
        "f.toml: node.event_loop: Input should be 'asyncio', 'auto' or 'uvloop' (got 'gevent')"]
    with pytest.raises(ConfigError) as err:
        parse_settings(tomllib.loads('[node]\nevent_loop = "uvloop"\n' + TLS_SIP), "f.toml")
    assert len(err.value.problems) == 1
    assert "node.event_loop: SIP over TLS does not work on uvloop" in err.value.problems[0]
    assert parse_settings(tomllib.loads('[node]\nevent_loop = "auto"\n' + TLS_SIP),
                          "f.toml").node.event_loop == "auto"


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Put the collector back as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_survivors_and_raises_gen0() -> None:
    """Everything alive is frozen (never scanned again); gen0 waits longer; a later
    cycle is still collected."""
    gc.unfreeze()
    kept = [[i] for i in range(10)]  # lists are tracked by the collector
    assert any(o is kept[0] for o in gc.get_objects(generation=0))
    settle_heap()
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold()[0] == GEN0_THRESHOLD
    for generation in (0, 1, 2):
        assert not any(o is kept[0] for o in gc.get_objects(generation=generation))

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # the frozen heap does not stop cycles being freed


def test_the_product_never_uses_asyncio_wait_for() -> None:
    """On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives in the
    same loop turn as the result (CPython gh-86296): a service task then outlives its
    stop (a TETRA gateway's stop hung and never unkeyed).  ``asyncio.timeout`` does not."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = [f"{path.relative_to(root)}:{n}"
             for package in ("telephony", "radio", "intake", "dispatch", "sms", "hardware")
             for path in sorted((root / package).rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if "wait_for(" in line and "asyncio" in line and "emulators" not in path.parts]
    assert found == [], "use asyncio.timeout instead of asyncio.wait_for at " + ", ".join(found)
