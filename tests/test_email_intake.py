"""Emailed reports: a real SMTP client (aiosmtplib) talks to the listener on the daemon's loop."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select

from dispatch.email_intake import EmailIntake
from dispatch.models import ReportRow

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
async def mail(daemon: Any) -> Any:
    service = EmailIntake(daemon.reports, host="127.0.0.1", port=0, max_message_bytes=64_000,
                          recipients=("report@ecc.test",))
    await service.start()
    yield service
    await service.stop()


def message(subject: str, body: str, msgid: str, html: bool = False) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = ("plant@chem.test", "report@ecc.test",
                                                          subject, msgid)
    if html:
        m.set_content(f"<html><body><p>{body}</p></body></html>", subtype="html")
    else:
        m.set_content(body)  # UTF-8, encoded as the library chooses (base64 for Chinese)
    return m


async def test_email_becomes_a_report_once(daemon: Any, mail: EmailIntake, tmp_path: Path) -> None:
    port = mail.bound[1]
    m = message("紧急：储罐泄漏", "长安镇化工厂储罐泄漏，两名工人受伤，附近居民需要疏散", "<a1@chem.test>")
    errors, reply = await aiosmtplib.send(m, hostname="127.0.0.1", port=port)
    assert errors == {} and reply.startswith("2.0.0 report ")
    again, reply2 = await aiosmtplib.send(m, hostname="127.0.0.1", port=port)
    assert reply2 == reply, "re-delivery finds the same report"
    html = message("Fire", "Smoke from the <b>warehouse</b> roof at Humen port", "<a2@x>", html=True)
    await aiosmtplib.send(html, hostname="127.0.0.1", port=port)
    async with daemon.db.session() as s:
        rows = (await s.scalars(select(ReportRow).where(ReportRow.channel == "email")
                                .order_by(ReportRow.received_at))).all()
    assert [r.source_ref for r in rows] == ["<a1@chem.test>", "<a2@x>"]
    assert rows[0].text.startswith("紧急：储罐泄漏\n长安镇化工厂") and rows[0].caller == "plant@chem.test"
    assert rows[0].assessed and rows[0].category == "accident"
    assert "<b>" not in rows[1].text and "warehouse" in rows[1].text


async def test_refusals(daemon: Any, mail: EmailIntake) -> None:
    port = mail.bound[1]
    m = message("x", "y", "<b1@x>")
    m.replace_header("To", "someone@else.test")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(m, hostname="127.0.0.1", port=port)
    big = message("big", "x" * 100_000, "<b2@x>")
    with pytest.raises(aiosmtplib.SMTPResponseException) as err:
        await aiosmtplib.send(big, hostname="127.0.0.1", port=port)
    assert err.value.code == 552
    empty = message("", " ", "<b3@x>")
    with pytest.raises(aiosmtplib.SMTPDataError) as err2:
        await aiosmtplib.send(empty, hostname="127.0.0.1", port=port)
    assert err2.value.code == 554


async def test_storage_failure_asks_the_sender_to_retry(daemon: Any, mail: EmailIntake,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(daemon.reports, "submit", broken)
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await aiosmtplib.send(message("s", "t", "<c1@x>"), hostname="127.0.0.1",
                              port=mail.bound[1])
    assert err.value.code == 451, "the sending server keeps the message and tries again"
