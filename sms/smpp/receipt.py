"""SMSC delivery receipts: the SMPP 3.4 Appendix B text and the receipt TLVs.

The receipt text is only "typical" in the spec, and SMSCs vary (``Text:`` or
``text:``, 10- or 12-digit dates, fields missing), so parsing is by key and
tolerant.  When the ``receipted_message_id`` and ``message_state`` TLVs are
present they win over the text, because they are typed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime

from ..errors import SmppDecodeError

MAX_RECEIPT_TEXT = 1024


class MessageState(enum.IntEnum):
    """SMPP 3.4 §5.2.28 message_state values."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8

    @property
    def final(self) -> bool:
        """True for states after which no further receipt is expected."""
        return self not in (MessageState.ENROUTE, MessageState.ACCEPTED, MessageState.UNKNOWN)


# Appendix B "stat" abbreviations.
STAT_NAMES: dict[str, MessageState] = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
}

_FIELD = re.compile(
    r"(?i)(?:^|\s)(id|sub|dlvrd|submit date|done date|stat|err):(\S*)")
_TEXT = re.compile(r"(?is)(?:^|\s)text:(.*)$")


@dataclass(frozen=True, slots=True)
class ReceiptText:
    """Fields of an Appendix B receipt text; absent fields are None."""

    message_id: str
    state: MessageState | None
    error: str | None
    submitted: int | None
    delivered: int | None
    submit_date: datetime | None
    done_date: datetime | None
    text: str


def _date(value: str | None) -> datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss, in the SMSC's (unknown) local time."""
    if value is None or not value.isdigit() or len(value) not in (10, 12):
        return None
    fmt = "%y%m%d%H%M%S" if len(value) == 12 else "%y%m%d%H%M"
    try:
        return datetime.strptime(value, fmt)
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def parse_receipt_text(text: str) -> ReceiptText:
    """Parse ``id:... sub:... dlvrd:... submit date:... done date:... stat:... err:... text:...``.

    Raises :class:`~sms.errors.SmppDecodeError` when there is no ``id:`` field.
    """
    head = text[:MAX_RECEIPT_TEXT]
    match = _TEXT.search(head)
    body = match.group(1) if match else ""
    fields_part = head[:match.start()] if match else head
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(fields_part):
        fields.setdefault(key.lower(), value)
    message_id = fields.get("id")
    if not message_id:
        raise SmppDecodeError("delivery receipt has no id field")
    stat = fields.get("stat")
    return ReceiptText(
        message_id=message_id,
        state=STAT_NAMES.get(stat.upper()) if stat else None,
        error=fields.get("err"),
        submitted=_int(fields.get("sub")),
        delivered=_int(fields.get("dlvrd")),
        submit_date=_date(fields.get("submit date")),
        done_date=_date(fields.get("done date")),
        text=body,
    )


def message_id_variants(message_id: str) -> frozenset[str]:
    """Forms under which one SMSC message id may come back, for matching receipts.

    SMPP 3.4 leaves the id format to the SMSC, and many answer submit_sm with a
    hexadecimal id but write the receipt's ``id:`` in decimal (or the other way
    round), with or without leading zeros.  Index a submission under every
    variant and look a receipt up by its id as given.
    """
    mid = message_id.strip()
    variants = {mid, mid.lower(), mid.lstrip("0") or "0"}
    if mid and len(mid) <= 32:
        try:
            as_hex = int(mid, 16)
            variants.add(str(as_hex))
            variants.add(f"{as_hex:x}")
        except ValueError:
            pass
        if mid.isdigit():
            variants.add(f"{int(mid):x}")
            variants.add(f"{int(mid):X}")
    return frozenset(variants)
