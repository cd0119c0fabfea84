"""Which transport carries a message: routes by number prefix, with failover order.

Pure logic: :class:`Router` is built once from the configured routes and the
transport names, and :meth:`Router.candidates` answers, for a number, the
transports to try in order.  The longest matching prefix wins; a number no
route matches goes to the default order (every transport as configured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """Numbers starting with ``prefix`` (E.164, ``+`` optional) try ``transports`` in order."""

    prefix: str
    transports: tuple[str, ...]


class Router:
    """Prefix routes over named transports."""

    def __init__(self, routes: Sequence[Route], default: Sequence[str]) -> None:
        """``default`` is the order for numbers no route matches."""
        known = set(default)
        for route in routes:
            unknown = [t for t in route.transports if t not in known]
            if unknown:
                raise ValueError(f"route {route.prefix!r} names unknown transports {unknown}")
        # Longest prefix first; "+86" and "86" are the same prefix.
        self.routes = sorted(((r.prefix.lstrip("+"), r.transports) for r in routes),
                             key=lambda r: -len(r[0]))
        self.default = tuple(default)

    def candidates(self, msisdn: str) -> tuple[str, ...]:
        """The transports to try for ``msisdn``, best first."""
        digits = msisdn.lstrip("+")
        for prefix, transports in self.routes:
            if digits.startswith(prefix):
                return transports
        return self.default
