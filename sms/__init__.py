"""SMS: broadcast campaigns, area targeting and transports.

GSM-7/UCS-2 encoding and segmentation, SMPP 3.4 and GSM modem-pool transports,
CAP 1.2 export and inbound SMS.  Builds on :mod:`hardware` for modems.
"""
