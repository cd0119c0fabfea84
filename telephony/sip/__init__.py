"""Sans-I/O SIP protocol cores (RFC 3261).

Everything in this package takes bytes and ``now`` and returns parsed objects,
events, bytes to send and the next timer deadline.  Nothing here touches a
socket or reads the clock; the UDP/TCP adapters, registrar and B2BUA wire
these cores to the event loop.

Modules:

* :mod:`telephony.sip.errors` -- one exception tree carrying the SIP status to
  answer with.
* :mod:`telephony.sip.uri` -- SIP/SIPS/TEL URI parser and serialiser.
* :mod:`telephony.sip.headers` -- header container, compact forms and
  structured header values (Via, name-addr, CSeq, ...).
* :mod:`telephony.sip.message` -- request/response parsing, serialisation,
  stream framing and ``build_response``.
* :mod:`telephony.sip.events` -- timer settings, transaction keys and the
  frozen-dataclass events the transaction layer emits.
* :mod:`telephony.sip.transaction` -- the four RFC 3261 section 17 state
  machines and the transaction layer that matches messages to them.
* :mod:`telephony.sip.digest` -- digest authentication (MD5, SHA-256) for
  both the server and our outbound registrations.
* :mod:`telephony.sip.dialog` -- dialog state and in-dialog request building.
"""
