"""Call-taker queues (ACD): a sans-I/O engine, its vocabulary and its config.

The B2BUA drives :class:`AcdEngine` with what happened and carries out the
actions it returns; nothing here knows about SIP.
"""

from telephony.acd.config import ConfigError, load_acd_settings
from telephony.acd.engine import (
    AcdEngine,
    AcdError,
    AcdStateError,
    AgentStatus,
    TimerKind,
    UnknownAgent,
    UnknownCall,
    UnknownQueue,
)
from telephony.acd.events import *  # noqa: F403 - the vocabulary is the public API
from telephony.acd.events import __all__ as _events_all

__all__ = [
    "AcdEngine",
    "AcdError",
    "AcdStateError",
    "AgentStatus",
    "ConfigError",
    "TimerKind",
    "UnknownAgent",
    "UnknownCall",
    "UnknownQueue",
    "load_acd_settings",
    *_events_all,
]
