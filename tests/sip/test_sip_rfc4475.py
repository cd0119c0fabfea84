"""RFC 4475 torture messages: what we accept, what we reject and with what status."""

from __future__ import annotations

from pathlib import Path

import pytest

from telephony.sip.errors import SipBadExtension, SipError
from telephony.sip.headers import NameAddr
from telephony.sip.message import (
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    check_require,
    parse_message,
)
from telephony.sip.uri import AbsoluteUri, SipUri

DATA = Path(__file__).parent / "rfc4475"


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


# Messages the parser accepts.  Besides the valid ones of section 3.1.1 this
# includes messages whose problems RFC 4475 assigns to a later layer:
#   baddate  - Date is never interpreted by us; RFC 4475 3.1.2.12 allows ignoring it.
#   badbranch - syntactically fine; the transaction layer answers 400 (see transaction tests).
#   bcast    - a 200 whose second Via is a broadcast address: the response is only ever
#              sent to the top Via, which is a transport matter, not a parse error.
#   bext01   - the UAS answers 420 via check_require (tested below).
#   unksm2   - unknown schemes in To/From/Contact parse as AbsoluteUri; a registrar rejects.
#   invut, sdp01, regaut01, zeromf, cparam01, cparam02, regescrt - application-layer matters.
#   inv2543  - RFC 2543 INVITE without Max-Forwards or branch: accepted, max_forwards is None.
ACCEPTED = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
    "semiuri", "transports", "unreason", "noreason", "baddate", "badbranch", "bcast",
    "bext01", "unksm2", "invut", "sdp01", "regaut01", "zeromf", "cparam01", "cparam02",
    "regescrt", "inv2543",
]

# (name, status, response possible).  "Response possible" means Via, From, To,
# Call-ID and CSeq are usable, so a 4xx/5xx can be built from the raw fields.
REJECTED = [
    ("badinv01", 400, False),  # empty Via params: the Via itself is unusable
    ("clerr", 400, True),  # Content-Length beyond the datagram (UDP)
    ("ncl", 400, True),  # negative Content-Length
    ("scalar02", 400, True),  # CSeq > 2**32-1 (answered by copying the raw CSeq)
    ("scalarlg", 400, False),  # a response: dropped, never answered
    ("quotbal", 400, False),  # unterminated quote in To: we do not guess the quote
    ("ltgtruri", 400, True),  # <> around the Request-URI: not a URI, answered 400
    ("lwsruri", 400, False),  # LWS inside the Request-URI: bad request line
    ("lwsstart", 400, False),  # strict: extra SP in the request line (RFC allows rejecting)
    ("trws", 400, False),  # strict: trailing SP after SIP/2.0 (RFC allows rejecting)
    ("escruri", 400, True),  # escaped headers in the Request-URI (RFC allows rejecting)
    ("regbadct", 400, True),  # addr-spec Contact with ?headers must be in <>
    ("badaspec", 400, False),  # spaces inside <...> in To: To unusable
    ("baddn", 400, False),  # unquoted display names with commas: From/To unusable
    ("badvers", 505, True),  # SIP/7.0
    ("mismatch01", 400, True),  # CSeq method differs from the request method
    ("mismatch02", 400, True),  # same, unknown method: RFC prefers 501, 400 is allowed
    ("bigcode", 400, False),  # status code 4294967301: a response, dropped
    ("insuf", 400, False),  # no From/To/Call-ID: nothing to answer with
    ("unkscm", 416, True),  # unknown Request-URI scheme
    ("novelsc", 416, True),  # soap.beep is not a scheme we route
    ("multi01", 400, False),  # two To/From/CSeq/Call-ID: which one would we copy?
    ("mcl01", 400, True),  # two Content-Length values
]


def test_every_file_is_classified() -> None:
    names = {p.stem for p in DATA.glob("*.dat")}
    assert names == set(ACCEPTED) | {name for name, _, _ in REJECTED}


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_messages_parse_and_round_trip(name: str) -> None:
    message = parse_message(load(name))
    again = parse_message(message.to_bytes())
    # Serialising always states Content-Length; everything else is unchanged.
    assert [h for h in again.headers if h[0] != "Content-Length"] == [
        h for h in message.headers if h[0] != "Content-Length"
    ]
    assert again.start_line() == message.start_line()
    assert again.body == message.body
    assert again.to_bytes() == message.to_bytes()


# dblreq (trailing octets) and inv2543 (no Content-Length) are datagram-only
# messages: on a stream they cannot be framed, by RFC 3261 section 18.3.
STREAMABLE = [name for name in ACCEPTED if name not in ("dblreq", "inv2543")]


@pytest.mark.parametrize("name", STREAMABLE)
def test_accepted_messages_frame_on_a_stream(name: str) -> None:
    framer = StreamFramer()
    data = load(name)
    frames = framer.feed(data + data)
    assert [parse_message(f) for f in frames] == [parse_message(data)] * 2
    assert framer.buffered == 0


@pytest.mark.parametrize(("name", "status", "answerable"), REJECTED)
def test_rejected_messages(name: str, status: int, answerable: bool) -> None:
    with pytest.raises(SipError) as info:
        parse_message(load(name))
    assert info.value.status == status
    assert info.value.response_possible is answerable
    if answerable:
        assert info.value.request is not None
        response = build_response(info.value.request, status, to_tag="t1")
        assert response.status == status
        assert response.headers.get_all("Via") == info.value.request.headers.get_all("Via")


def test_wsinv_structure() -> None:
    msg = parse_message(load("wsinv"))
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri) and msg.uri.has_param("unknownparam")
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert msg.cseq.number == 9 and msg.cseq.method == "INVITE"
    vias = msg.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.param("newparam") == "newvalue"
    assert contact.has_param("secondparam") and contact.param("q") == "0.33"
    assert msg.routes[0].sip_uri.has_param("unknown-no-value")
    assert len(msg.body) == 150


def test_intmeth_structure() -> None:
    msg = parse_message(load("intmeth"))
    assert isinstance(msg, SipRequest)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.param("fromParam''~+*_!.-%") == "работающий"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escapes_are_kept_and_decodable() -> None:
    esc01 = parse_message(load("esc01"))
    assert isinstance(esc01, SipRequest) and isinstance(esc01.uri, SipUri)
    assert esc01.uri.user == "sips%3Auser%40example.com"
    assert esc01.uri.user_unquoted() == b"sips:user@example.com"
    contact_uri = esc01.contacts[0].sip_uri
    assert contact_uri.param("n%61me") == "v%61lue%25%34%31"
    escnull = parse_message(load("escnull"))
    users = [c.sip_uri.user_unquoted() for c in escnull.contacts]
    assert users == [b"\x00", b"\x00\x00"]
    assert escnull.to.sip_uri.user_unquoted() == b"null-\x00-null"


def test_esc02_percent_is_not_an_escape_in_tokens() -> None:
    msg = parse_message(load("esc02"))
    assert isinstance(msg, SipRequest)
    assert msg.method == "RE%47IST%45R"
    assert msg.to.display_name == "%Z%45"
    assert [c.sip_uri.user for c in msg.contacts] == ["alias1", "alias3"]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_longreq_34_vias_and_long_values() -> None:
    msg = parse_message(load("longreq"))
    vias = msg.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:33]] == [f"sip{i}.example.com" for i in range(33, 0, -1)]
    assert vias[33].received == "192.0.2.5"
    assert msg.to.sip_uri.port == 6000
    assert (msg.from_.tag or "").startswith("1298298") and (msg.from_.tag or "").endswith("424")


def test_dblreq_ignores_trailing_octets_in_a_datagram() -> None:
    msg = parse_message(load("dblreq"))
    assert isinstance(msg, SipRequest) and msg.method == "REGISTER"
    assert msg.body == b""


def test_semiuri_user_contains_semicolon() -> None:
    msg = parse_message(load("semiuri"))
    assert isinstance(msg, SipRequest) and isinstance(msg.uri, SipUri)
    assert msg.uri.user == "user;par=u%40example.net"
    assert msg.uri.host == "example.com" and msg.uri.params == ()
    assert len(msg.headers.values("Accept")) == 6


def test_transports_and_reasons() -> None:
    transports = parse_message(load("transports"))
    assert [v.transport for v in transports.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    unreason = parse_message(load("unreason"))
    assert isinstance(unreason, SipResponse) and unreason.status == 200
    assert unreason.reason.startswith("= 2**3 * 5**2 но")
    noreason = parse_message(load("noreason"))
    assert isinstance(noreason, SipResponse) and noreason.reason == ""


def test_lwsdisp_token_display_name_without_space() -> None:
    assert parse_message(load("lwsdisp")).from_.display_name == "caller"


def test_cparam_header_param_versus_uri_param() -> None:
    (c1,) = parse_message(load("cparam01")).contacts
    assert c1.has_param("unknownparam") and not c1.sip_uri.has_param("unknownparam")
    (c2,) = parse_message(load("cparam02")).contacts
    assert not c2.has_param("unknownparam") and c2.sip_uri.has_param("unknownparam")


def test_unknown_schemes_in_header_fields() -> None:
    msg = parse_message(load("unksm2"))
    assert msg.to.uri == AbsoluteUri("isbn", "2983792873")
    assert msg.contacts == [NameAddr(AbsoluteUri("name", "John_Smith"))]


def test_bext01_answered_420_with_unsupported_tags() -> None:
    msg = parse_message(load("bext01"))
    assert isinstance(msg, SipRequest)
    with pytest.raises(SipBadExtension) as info:
        check_require(msg, supported=("replaces", "timer"))
    assert info.value.status == 420
    assert info.value.unsupported == ("nothingSupportsThis", "nothingSupportsThisEither")
    check_require(msg, supported=("nothingsupportsthis", "NOTHINGSUPPORTSTHISEITHER"))


def test_inv2543_and_zeromf_max_forwards() -> None:
    assert parse_message(load("inv2543")).max_forwards is None
    assert parse_message(load("zeromf")).max_forwards == 0


def test_intmeth_can_be_answered_despite_quoted_nul() -> None:
    msg = parse_message(load("intmeth"))
    assert isinstance(msg, SipRequest)
    response = build_response(msg, 501, to_tag="x")
    again = parse_message(response.to_bytes())
    assert again.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert again.to.tag == "x"
