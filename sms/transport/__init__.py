"""Transports that carry SMS for dispatchd: an asyncio SMPP 3.4 client and a pool of binds.

``from sms.transport import SmppClient, SmppPool, SmppSettings`` is the usual entry point.
"""

from .errors import (
    SmppBindRefused,
    SmppTransportError,
    SubmitError,
    SubmitOutcomeUnknownError,
    SubmitPermanentError,
    SubmitTemporaryError,
    TransportStopped,
)
from .pool import SmppPool
from .ratelimit import IdFormat, ReceiptIndex, TokenBucket
from .smpp import Counters, ReceivedSms, SmppClient, SmppSettings, SubmitHandle

__all__ = ["Counters", "IdFormat", "ReceiptIndex", "ReceivedSms", "SmppBindRefused", "SmppClient",
           "SmppPool", "SmppSettings", "SmppTransportError", "SubmitError", "SubmitHandle",
           "SubmitOutcomeUnknownError", "SubmitPermanentError", "SubmitTemporaryError",
           "TokenBucket", "TransportStopped"]
