"""Telephony: SIP and media.

SIP messages, transports, transactions, dialogs, digest authentication, the
registrar and the B2BUA; trunks, hotline routing and call-taker queues (ACD);
media (RTP, codecs, jitter buffer, mixer, conferences, force-in/force-release,
recording, prompts).  Depends on nothing of ours but :mod:`hardware`.
"""
