"""Media anchoring: G.711 codecs, RTP/RTCP, SDP, DTMF, jitter buffer, mixer, engine.

Every call's audio passes through dispatchd's own mixer so that force-in
(listen, whisper, barge), recording and radio patching work on any call.
The cores touch no socket and read no clock; adapters hand in bytes and
``now`` and send what the cores return.  :mod:`.engine` is that adapter
(asyncio UDP, the 20 ms clock) and implements :class:`.anchor.MediaAnchor`,
the contract the SIP B2BUA uses; :mod:`.sdp` does RFC 3264 offer/answer,
:mod:`.recorder` seals each room's WAV with its SHA-256, :mod:`.prompts`
plays announcements and hold music, :mod:`.forcein` maps *1/*2/*3 to modes.

Modules: :mod:`.g711` (µ-law/A-law tables), :mod:`.rtp` (RTP/RTCP codecs),
:mod:`.dtmf` (RFC 4733 events, RFC 2198 redundancy, DTMF receiver, in-band
detector), :mod:`.jitter` (per-leg jitter buffer, symmetric RTP latch),
:mod:`.mixer` (conference mixer with recording tap), :mod:`.wav` (crash-safe
two-channel WAV writer), :mod:`.errors` (the one exception tree).
"""
