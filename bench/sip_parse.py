"""Parse + serialise throughput for a typical INVITE with SDP.

Run: python bench/sip_parse.py [seconds]
Prints figures; the last line is ``parse_per_s=N`` (parse + structured access
of the core headers + serialise, per second, single core).
"""

from __future__ import annotations

import sys
import time

from telephony.sip.message import parse_message

SDP = (
    b"v=0\r\no=- 20518 0 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n"
    b"m=audio 54400 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:110@dispatch.example.cn SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-524287-1---7b1a6d2c3e;rport\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK77ef4c2312983.1;received=198.51.100.9\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:198.51.100.9;lr;ftag=as4f7e>\r\n"
    b"Contact: <sip:13800000000@203.0.113.1:5060;transport=udp>\r\n"
    b"To: <sip:110@dispatch.example.cn>\r\n"
    b'From: "13800000000" <sip:13800000000@carrier.example.cn>;tag=as4f7e\r\n'
    b"Call-ID: 3c26700857a8-ekp7g3ncbn7e@203.0.113.1\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: CarrierSBC 5.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def main(seconds: float) -> None:
    """Run the loop for ``seconds`` and print the rate."""
    count = 0
    size = len(INVITE)
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            msg = parse_message(INVITE)
            _ = msg.top_via.branch, msg.from_.tag, msg.to.tag, msg.cseq, msg.call_id
            msg.to_bytes()
        count += 100
    elapsed = time.perf_counter() - start
    rate = count / elapsed
    print(f"message_bytes={size}")
    print(f"messages={count} seconds={elapsed:.2f}")
    print(f"mbit_per_s={rate * size * 8 / 1e6:.1f}")
    print(f"parse_per_s={rate:.0f}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
