"""Small helpers the API routers share."""

from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException

T = TypeVar("T")


def configured(service: T | None, what: str, feature: str, why: str) -> T:
    """``service``, or the answer when its feature is off on this node.

    A named thing (``what``, e.g. ``"call 42"``) is then unknown: 404.  An action on the
    feature (``what`` empty) cannot be taken: 409.  Lists should answer empty instead.
    """
    if service is None:
        raise HTTPException(404 if what else 409, f"no {what or feature}: {why}")
    return service
