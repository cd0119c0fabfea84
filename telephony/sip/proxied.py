"""The caller's real address when a request was relayed by a trusted SIP proxy.

Behind Kamailio every request reaches a node from Kamailio's address, so a
trunk authenticated by its source address, the registrar's rate limiter and
blocker, and the audit trail would all see one address.  Kamailio therefore
removes any :data:`SOURCE_HEADER` a request arrives with and adds its own,
naming the address the packet really came from::

    X-Dispatchd-Source: 203.0.113.7:5060;transport=udp

The header is believed only when the packet itself comes from a configured
proxy address (``[sip] proxies``).  :func:`screen_source` runs on every request
the transport parses: from a proxy it checks the header (a malformed one is
removed and logged); from anyone else it removes the header and logs it, so
nothing downstream can be fooled.  :func:`origin_of` then gives the address
to judge a request by: the header's when it survived screening, else the
packet's source.  Replies and in-dialog routing keep using the packet's
source (the proxy): only identity and accounting use the origin.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence

from telephony.sip.message import Destination, SipRequest

log = logging.getLogger(__name__)

SOURCE_HEADER = "X-Dispatchd-Source"
#: Longest header value accepted (an IPv6 address, a port and the parameter fit easily).
MAX_VALUE = 96
_VALUE = re.compile(r"^\s*(\[[0-9A-Fa-f:.]+\]|[0-9.]+):([0-9]{1,5})\s*;\s*transport=(udp|tcp|tls)"
                    r"\s*$", re.IGNORECASE)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourceHeaderError(ValueError):
    """A :data:`SOURCE_HEADER` value that is not ``ip:port;transport=udp|tcp|tls``."""


def parse_source(value: str) -> Destination:
    """The address a proxy says a request came from; :class:`SourceHeaderError` if malformed."""
    if len(value) > MAX_VALUE:
        raise SourceHeaderError("value too long")
    found = _VALUE.match(value)
    if found is None:
        raise SourceHeaderError("not ip:port;transport=udp|tcp|tls")
    host, port = found.group(1).strip("[]"), int(found.group(2))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SourceHeaderError(f"not an IP address: {host!r}") from None
    if not 0 < port < 65536:
        raise SourceHeaderError(f"port out of range: {port}")
    return Destination(found.group(3).upper(), str(address), port)


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Proxy addresses or networks (``127.0.0.1``, ``10.0.0.0/24``); ValueError if not."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


class ProxyTrust:
    """Which packet sources may name a request's real origin (``[sip] proxies``)."""

    def __init__(self, proxies: Sequence[Network] = ()) -> None:
        """Trust :data:`SOURCE_HEADER` only from ``proxies``."""
        self.proxies = tuple(proxies)
        self._cache: dict[str, bool] = {}
        self.accepted = self.ignored = self.malformed = 0

    def trusted(self, host: str) -> bool:
        """True if packets from ``host`` come from a configured proxy."""
        known = self._cache.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                known = False
            else:
                known = any(address in net for net in self.proxies)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[host] = known
        return known

    def screen(self, request: SipRequest, source: Destination) -> Destination | None:
        """Keep a well-formed header from a proxy; remove it from everything else (logged).

        Returns the origin the header names when it was kept, else None.
        """
        values = request.headers.get_all(SOURCE_HEADER)
        if not values:
            return None
        if not self.trusted(source.host):
            self.ignored += 1
            request.headers.remove(SOURCE_HEADER)
            log.warning("SIP %s from %s:%d carried %s but is not from a configured proxy; "
                        "header ignored", request.method, source.host, source.port,
                        SOURCE_HEADER)
            return None
        try:
            if len(values) != 1:
                raise SourceHeaderError("more than one header")
            origin = parse_source(values[0])
        except SourceHeaderError as exc:
            self.malformed += 1
            request.headers.remove(SOURCE_HEADER)
            log.warning("SIP %s from proxy %s:%d: bad %s (%s); judged by the proxy's address",
                        request.method, source.host, source.port, SOURCE_HEADER, exc)
            return None
        self.accepted += 1
        return origin


def origin_of(request: SipRequest, source: Destination) -> Destination:
    """The address to judge ``request`` by: a screened proxy header, else the packet's source."""
    value = request.headers.get(SOURCE_HEADER)
    if value is None:
        return source
    try:
        return parse_source(value)
    except SourceHeaderError:  # not screened (a request built in-process): distrust it
        return source
