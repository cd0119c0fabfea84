"""Media anchoring, sans-I/O: G.711 codecs, RTP/RTCP, DTMF, jitter buffer, mixer.

Every call's audio passes through dispatchd's own mixer so that force-in
(listen, whisper, barge), recording and radio patching work on any call.
Nothing here touches a socket or reads a clock; adapters hand in bytes and
``now`` and send what the cores return.
"""
