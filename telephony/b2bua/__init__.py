"""The B2BUA: inbound calls from trunks and phones to call-taker queues.

* :mod:`telephony.b2bua.core` -- :class:`B2bua`, the INVITE/CANCEL/BYE transaction user.
* :mod:`telephony.b2bua.anchor` -- the :class:`MediaAnchor` Protocol and a pass-through.
* :mod:`telephony.b2bua.trunks` -- OPTIONS keep-alives and outbound registration.
* :mod:`telephony.b2bua.config` -- ``[[trunks]]`` and the telephony tables of the config.
* :mod:`telephony.b2bua.events` -- what the B2BUA reports.
"""

from telephony.b2bua.anchor import MediaAnchor, PassThroughAnchor
from telephony.b2bua.core import B2bua, B2buaSettings

__all__ = ["B2bua", "B2buaSettings", "MediaAnchor", "PassThroughAnchor"]
