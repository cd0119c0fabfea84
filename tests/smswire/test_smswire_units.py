"""Small pieces of the SMS wiring: routes, stored receipt ids, [sms] settings, throttle bursts."""

from __future__ import annotations

import pytest

from dispatch.config import ConfigError, parse_settings
from sms.routing import Route, Router
from sms.smpp.codec import BindResp, CommandStatus, SubmitSm, SubmitSmResp, encode_pdu
from sms.smpp.session import SessionSettings, SmppSession
from sms.transport import IdFormat
from sms.transport.ratelimit import receipt_id, stored_id


def test_routes_longest_prefix_then_default() -> None:
    router = Router([Route("+86", ("carrier", "modems")), Route("86755", ("modems",)),
                     Route("+852", ("hk",))], ["carrier", "hk", "modems"])
    assert router.candidates("+8613800138000") == ("carrier", "modems")
    assert router.candidates("+8675512345678") == ("modems",)
    assert router.candidates("+85251234567") == ("hk",)
    assert router.candidates("+14155550100") == ("carrier", "hk", "modems")
    with pytest.raises(ValueError, match="unknown transports"):
        Router([Route("+1", ("nope",))], ["carrier"])


@pytest.mark.parametrize(("fmt", "submit_id", "receipt"), [
    (IdFormat.SAME, "00A1b2", "a1B2"),
    (IdFormat.HEX_AS_DECIMAL, "000000002A", "42"),
    (IdFormat.HEX_AS_DECIMAL, "000000002A", "0000000042"),
    (IdFormat.DECIMAL_AS_HEX, "42", "2a"),
    (IdFormat.DECIMAL_AS_HEX, "42", "0000002A"),
])
def test_stored_id_matches_the_receipt_form(fmt: IdFormat, submit_id: str, receipt: str) -> None:
    assert stored_id(submit_id, fmt) == receipt_id(receipt, fmt)


def test_stored_ids_of_different_messages_differ() -> None:
    fmt = IdFormat.HEX_AS_DECIMAL
    assert stored_id("000000002A", fmt) != stored_id("000000002B", fmt)
    assert receipt_id("43", fmt) == stored_id("000000002B", fmt)


SMPP = {"name": "a", "host": "smsc", "system_id": "dispatchd", "password_env": "P"}


@pytest.mark.parametrize(("sms", "expected"), [
    ({"smpp": [{**SMPP, "window": 0}]}, "test: sms.smpp[0].window: "),
    ({"smpp": [{**SMPP, "passwd": "x"}]}, "test: sms.smpp[0].passwd: unknown key"),
    ({"smpp": [{**SMPP, "receipt_ids": "octal"}]}, "test: sms.smpp[0].receipt_ids: "),
    ({"modems": [{"name": "g", "device": "/dev/x", "smsc": "abc"}]}, "sms.modems[0].smsc"),
    ({"smpp": [SMPP, SMPP]}, "transport name 'a' is used twice"),
    ({"smpp": [SMPP], "routes": [{"prefix": "+86", "transports": ["b"]}]},
     "routes[0] names 'b'"),
    ({"smpp": [SMPP], "modems": [{"name": "g", "device": "/dev/x", "pool": "a"}]},
     "modem pool 'a' has the name of an SMPP entry"),
    ({"opt_out_override": "always"}, "test: sms.opt_out_override: "),
])
def test_bad_sms_settings_name_the_key(sms: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"sms": sms}, "test")
    assert len(err.value.problems) == 1
    assert expected in err.value.problems[0]


def test_password_comes_from_the_environment_only() -> None:
    settings = parse_settings({"sms": {"smpp": [SMPP]}}, "test")
    bind = settings.sms.smpp[0]
    assert bind.password({"P": "s3cret"}) == "s3cret"
    with pytest.raises(ConfigError, match="environment variable P .* is not set"):
        bind.password({})
    with pytest.raises(ConfigError, match="longer than SMPP 3.4's 8"):
        bind.password({"P": "much-too-long"})
    assert settings.sms.enabled and not parse_settings({}, "t").sms.enabled


def bound_session(settings: SessionSettings) -> SmppSession:
    """A session bound as a transceiver at t=0."""
    s = SmppSession(settings)
    seq = s.bind("esme", "pw", "", now=0.0)
    s.data_to_send()
    s.receive_data(encode_pdu(BindResp(sequence_number=seq, system_id="SMSC")), 0.0)
    return s


def test_a_window_refused_at_once_is_one_push_back() -> None:
    # Twenty submits in flight all answered ESME_RTHROTTLED: one pause of
    # throttle_pause, not 2**19 seconds capped to throttle_pause_max.
    s: SmppSession = bound_session(SessionSettings(window=20, throttle_pause=1.0,
                                                   throttle_pause_max=30.0))
    seqs = [s.submit(SubmitSm(destination_addr="8613800138000", short_message=b"x"), 5.0)
            for _ in range(20)]
    s.data_to_send()
    data = b"".join(encode_pdu(SubmitSmResp(sequence_number=q,
                                            command_status=CommandStatus.ESME_RTHROTTLED))
                    for q in seqs)
    s.receive_data(data, 5.5)
    assert s.get_timer() == 6.5
