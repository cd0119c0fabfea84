"""SMPP 3.4 for an ESME: PDU codec, delivery receipts and the sans-I/O session."""
