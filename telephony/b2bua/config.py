"""Validation of the telephony tables of dispatchd.toml: queues, routing, SIP trunks.

``[[trunks]]`` carries two kinds of keys: number handling (``area_codes``,
``rewrite``), validated by :func:`telephony.routing.load_routing_settings`,
and the SIP side (where the trunk is, how it authenticates, its call limit,
keep-alives and outbound registration), validated here.  Every problem raises
:class:`~telephony.acd.config.ConfigError` naming the key path
(``trunks[0].max_calls``); unknown keys are refused.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telephony.acd.config import ConfigError, Table, load_acd_settings
from telephony.acd.events import AcdSettings, Language
from telephony.routing import RoutingSettings, load_routing_settings

__all__ = ["InboundAuth", "SipTrunk", "TelephonySettings", "load_telephony"]

_ROUTING_KEYS = ("name", "area_codes", "rewrite")
_SIP_KEYS = (
    "address", "transport", "inbound", "sources", "source_port", "account", "max_calls",
    "keepalive", "register", "username", "password_file", "register_expires",
    "outbound_priority", "require_100rel", "language",
)


class InboundAuth(enum.Enum):
    """How an INVITE is recognised as coming from a trunk."""

    ADDRESS = "address"  # source address in ``sources`` (and ``source_port`` if set)
    DIGEST = "digest"  # Proxy-Authorization for the SIP account ``account``


@dataclass(frozen=True, slots=True)
class SipTrunk:
    """The SIP side of one ``[[trunks]]`` entry."""

    name: str
    host: str
    port: int
    transport: str = "UDP"
    inbound: InboundAuth = InboundAuth.ADDRESS
    sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    source_port: int | None = None
    account: str | None = None
    max_calls: int = 100
    keepalive: float = 0.0
    register: bool = False
    username: str | None = None
    password_file: str | None = None
    register_expires: int = 600
    outbound_priority: int = 0
    require_100rel: bool = False
    """RFC 3262: our 18x to its INVITEs go reliably (PRACK), INVITEs without 100rel get
    421, and INVITEs we send through it carry ``Require: 100rel``."""
    language: str | None = None  # queue announcements for its callers ("zh"/"en")

    def matches_source(self, host: str, port: int) -> bool:
        """True when a packet from ``host:port`` comes from this trunk (address auth)."""
        if self.inbound is not InboundAuth.ADDRESS:
            return False
        if self.source_port is not None and port != self.source_port:
            return False
        address = _source_address(host)
        return address is not None and any(address in network for network in self.sources)


@functools.lru_cache(maxsize=4096)
def _source_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The packet source as an address (None for anything else); asked for every INVITE
    from every trunk's peers, which are few, so parsing is remembered (bounded)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TelephonySettings:
    """Queues and agents, hotline routing, and the SIP trunks."""

    acd: AcdSettings
    routing: RoutingSettings
    trunks: tuple[SipTrunk, ...]


def _host_port(t: Table) -> tuple[str, int]:
    text = t.text("address")
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(t.key("address"), f"must be HOST:PORT, not {text!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(t.key("address"), "the host must be an IP address "
                          "(names would be resolved on the event loop)") from None
    return host, int(port)


def _sip_trunk(t: Table) -> SipTrunk:
    host, port = _host_port(t)
    transport = t.text("transport", "udp").upper()
    if transport not in ("UDP", "TCP", "TLS"):
        raise ConfigError(t.key("transport"), f"must be udp, tcp or tls, not {transport!r}")
    inbound = t.choice("inbound", InboundAuth, InboundAuth.ADDRESS)
    sources = []
    for i, text in enumerate(t.strings("sources", (host,))):
        try:
            sources.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{t.key('sources')}[{i}]", f"not an address or network: {text!r}"
                              ) from None
    source_port = t.integer("source_port", None, minimum=1)
    account = t.text("account", None)
    if inbound is InboundAuth.DIGEST and account is None:
        raise ConfigError(t.key("account"), "is required with inbound = \"digest\"")
    register = t.flag("register", False)
    username = t.text("username", None)
    password_file = t.text("password_file", None)
    if register and (username is None or password_file is None):
        raise ConfigError(t.key("register"), "needs username and password_file")
    return SipTrunk(
        name=t.text("name"), host=host, port=port, transport=transport, inbound=inbound,
        sources=tuple(sources), source_port=source_port, account=account,
        max_calls=t.integer("max_calls", 100, minimum=1),
        keepalive=t.seconds("keepalive", 0.0, positive=False),
        register=register, username=username, password_file=password_file,
        register_expires=t.integer("register_expires", 600, minimum=60),
        outbound_priority=t.integer("outbound_priority", 0),
        require_100rel=t.flag("require_100rel", False),
        language=None if (lang := t.choice("language", Language, None)) is None else lang.value,
    )


def load_telephony(root: Mapping[str, Any]) -> TelephonySettings:
    """Validate queues, agents, ``[acd]``, routing tables and trunks of a parsed file."""
    acd = load_acd_settings(root)
    top = Table(root, "")
    trunk_tables = top.tables("trunks")
    trunks = []
    stripped = []
    names: set[str] = set()
    for t in trunk_tables:
        t.only(_ROUTING_KEYS + _SIP_KEYS)
        trunk = _sip_trunk(t)
        if trunk.name in names:
            raise ConfigError(t.key("name"), f"duplicate trunk {trunk.name!r}")
        names.add(trunk.name)
        trunks.append(trunk)
        stripped.append({k: v for k, v in t.data.items() if k in _ROUTING_KEYS})
    routing_root = {k: root[k] for k in ("routing", "hotlines", "ringdowns") if k in root}
    routing_root["trunks"] = stripped
    routing = load_routing_settings(routing_root, {q.name for q in acd.queues})
    for i, ringdown in enumerate(routing.ringdowns):
        if ringdown.trunk is not None and ringdown.trunk not in names:
            raise ConfigError(f"ringdowns[{i}].trunk", f"no trunk named {ringdown.trunk!r}")
    return TelephonySettings(acd, routing, tuple(trunks))
