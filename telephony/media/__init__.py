"""Media anchoring, sans-I/O: G.711 codecs, RTP/RTCP, DTMF, jitter buffer, mixer.

Every call's audio passes through dispatchd's own mixer so that force-in
(listen, whisper, barge), recording and radio patching work on any call.
Nothing here touches a socket or reads a clock; adapters hand in bytes and
``now`` and send what the cores return.

Modules: :mod:`.g711` (µ-law/A-law tables), :mod:`.rtp` (RTP/RTCP codecs),
:mod:`.dtmf` (RFC 4733 events, RFC 2198 redundancy, DTMF receiver, in-band
detector), :mod:`.jitter` (per-leg jitter buffer, symmetric RTP latch),
:mod:`.mixer` (conference mixer with recording tap), :mod:`.wav` (crash-safe
two-channel WAV writer), :mod:`.errors` (the one exception tree).
"""
