"""The SIP registrar: REGISTER with digest auth, rate limits, blocking and bindings.

* :mod:`telephony.registrar.core` -- :class:`Registrar`, the REGISTER
  transaction user, and its :class:`RegistrarSettings`.
* :mod:`telephony.registrar.store` -- :class:`Binding`, the pluggable
  :class:`BindingStore` and :class:`CredentialStore` Protocols, in-memory
  implementations and the :func:`ha1` helper.
* :mod:`telephony.registrar.limits` -- per-source token bucket and
  failed-authentication blocker (sans-I/O).
* :mod:`telephony.registrar.events` -- what the registrar reports.
"""

from telephony.registrar.core import Registrar, RegistrarSettings
from telephony.registrar.events import (
    AuthFailed,
    AuthFailure,
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    RateLimited,
    RegistrarEvent,
    SourceBlocked,
)
from telephony.registrar.limits import FailureBlocker, TokenBucketLimiter
from telephony.registrar.store import (
    Binding,
    BindingStore,
    CredentialStore,
    MemoryBindingStore,
    MemoryCredentialStore,
    base_algorithm,
    ha1,
)

__all__ = [
    "AuthFailed",
    "AuthFailure",
    "Binding",
    "BindingAdded",
    "BindingExpired",
    "BindingRefreshed",
    "BindingRemoved",
    "BindingStore",
    "CredentialStore",
    "FailureBlocker",
    "MemoryBindingStore",
    "MemoryCredentialStore",
    "RateLimited",
    "Registrar",
    "RegistrarEvent",
    "RegistrarSettings",
    "SourceBlocked",
    "TokenBucketLimiter",
    "base_algorithm",
    "ha1",
]
