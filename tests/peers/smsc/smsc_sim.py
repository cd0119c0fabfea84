"""An SMSC for dispatchd's SMPP tests, built on smpp.twisted3 (the Jasmin team's library).

Runs in a venv of its own (smpp.twisted3 pins Twisted 23.10), started by
``scripts/smsc-sim``.  It listens on 127.0.0.1, port 0 by default, and writes
one JSON object per line on stdout; the first is ``{"event": "listening",
"port": N}``.  It reads commands from stdin, one per line::

    throttle N         answer ESME_RTHROTTLED above N accepted submit_sm per second (0: off)
    hostile on|off     on: never answer submit_sm (a silent SMSC)
    drop               abort every connection now
    drop-after N       abort every connection after the next N accepted submit_sm
    receipts on|off    send a delivery receipt for every accepted submit_sm
    mo {json}          deliver a mobile-originated message: {"id", "sender", "dest", "text"};
                       text longer than 70 UCS-2 characters goes as concatenated parts (UDH)
    stats              print {"event": "stats", ...}
    notify-at N        print {"event": "reached", "accepted": N} once N submit_sm were accepted
    flush              deliver every message still held now (see --hold)
    dump PATH          write {destination: messages the handset got or will get} as JSON to PATH
    quit               stop

Messages are *held* for ``--hold`` seconds (a negative value: until ``flush``)
before they count as delivered and their receipt goes out.  A submit_sm with
replace_if_present_flag set replaces a message still held for the same
destination, service_type and part (SMPP 3.4 §5.2.18): the handset sees one
message, and the stats count it under ``replaced``.  ``per_dest`` in the stats
is a histogram {messages per destination: destinations}; replacements are not
counted twice.

A deliver_sm answered with an error status is redelivered (up to 5 times);
each answer is reported as ``{"event": "mo_resp", "id", "part", "status", "attempt"}``.
Submit ids are answered in hexadecimal (``%010X``) while receipts carry the
id in decimal, as several real SMSCs do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from smpp.pdu.operations import DeliverSM
from smpp.pdu.pdu_types import (
    AddrNpi,
    AddrTon,
    CommandId,
    CommandStatus,
    DataCoding,
    DataCodingDefault,
    EsmClass,
    EsmClassGsmFeatures,
    EsmClassMode,
    EsmClassType,
    PriorityFlag,
    RegisteredDelivery,
    RegisteredDeliveryReceipt,
    ReplaceIfPresentFlag,
)
from smpp.twisted.config import SMPPServerConfig
from smpp.twisted.protocol import DataHandlerResponse
from smpp.twisted.server import IAuthenticatedSMPP, SMPPServerFactory
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor, stdio
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

MAX_REDELIVERIES = 5


def emit(**fields: Any) -> None:
    """One JSON line on stdout (the test reads these)."""
    sys.stdout.write(json.dumps(fields, ensure_ascii=True) + "\n")
    sys.stdout.flush()


@implementer(ICredentialsChecker)
class Checker:
    """Compares str with str: Twisted's in-memory checker stores bytes but is handed str."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def requestAvatarId(self, creds: Any) -> Any:
        user = creds.username.decode() if isinstance(creds.username, bytes) else creds.username
        password = creds.password.decode() if isinstance(creds.password, bytes) else creds.password
        if self.users.get(user) == password:
            return defer.succeed(user)
        return defer.fail(error.UnauthorizedLogin())


@implementer(IRealm)
class Realm:
    """Every authenticated system id is its own avatar."""

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        return IAuthenticatedSMPP, avatar_id, lambda: None


class Smsc:
    """The message handler and the state the control channel changes."""

    def __init__(self, throttle: int, receipts: bool, hold: float = 0.0) -> None:
        self.throttle = throttle
        self.hold = hold
        self.held: dict[tuple[bytes, bytes, int], tuple[Any, int, Any, Any]] = {}
        self.messages: Counter[bytes] = Counter()
        self.notify_at: int | None = None
        self.receipts = receipts
        self.hostile = False
        self.drop_after: int | None = None
        self.factory: SMPPServerFactory | None = None
        self.next_id = 0
        self.window_start = 0.0
        self.window_count = 0
        self.counts: Counter[str] = Counter()
        self.accepted_keys: Counter[bytes] = Counter()
        self.silent: list[defer.Deferred[Any]] = []  # kept so they are never collected

    # ---------------------------------------------------------------- submits

    def handle(self, system_id: str, proto: Any, pdu: Any) -> Any:
        """msgHandler: answer submit_sm (or not), accept anything else."""
        if pdu.id != CommandId.submit_sm:
            return DataHandlerResponse(status=CommandStatus.ESME_ROK)
        self.counts["submit_sm"] += 1
        if self.hostile:
            self.counts["unanswered"] += 1
            d: defer.Deferred[Any] = defer.Deferred()
            self.silent.append(d)
            return d
        if self.throttled():
            self.counts["throttled"] += 1
            return DataHandlerResponse(status=CommandStatus.ESME_RTHROTTLED)
        self.next_id += 1
        number = self.next_id
        key = (pdu.params["destination_addr"] or b"") + b"|" + (pdu.params["short_message"] or b"")
        self.accepted_keys[key] += 1
        self.counts["accepted"] += 1
        self.keep(proto, pdu, number)
        if self.notify_at is not None and self.counts["accepted"] >= self.notify_at:
            emit(event="reached", accepted=self.notify_at)
            self.notify_at = None
        if self.drop_after is not None:
            self.drop_after -= 1
            if self.drop_after <= 0:
                self.drop_after = None
                reactor.callLater(0, self.drop)
        return DataHandlerResponse(status=CommandStatus.ESME_ROK, message_id=f"{number:010X}")

    @staticmethod
    def part_of(pdu: Any) -> int:
        """The part number of a concatenated message (UDH IE 0x00 or 0x08), else 1."""
        body = pdu.params["short_message"] or b""
        if EsmClassGsmFeatures.UDHI_INDICATOR_SET not in pdu.params["esm_class"].gsmFeatures:
            return 1
        end, i = 1 + (body[0] if body else 0), 1
        while i + 1 < end <= len(body):
            iei, length = body[i], body[i + 1]
            if iei == 0x00 and length == 3:
                return body[i + 4]
            if iei == 0x08 and length == 4:
                return body[i + 5]
            i += 2 + length
        return 1

    def keep(self, proto: Any, pdu: Any, number: int) -> None:
        """Hold an accepted message (or replace a held one), then deliver it in time."""
        dest = pdu.params["destination_addr"] or b""
        service = pdu.params["service_type"] or b""
        if isinstance(service, str):
            service = service.encode()
        key = (dest, service, self.part_of(pdu))
        replace = pdu.params["replace_if_present_flag"] == ReplaceIfPresentFlag.REPLACE
        old = self.held.pop(key, None)
        if replace and old is not None:
            self.counts["replaced"] += 1
            if old[2] is not None and old[2].active():
                old[2].cancel()
        else:
            if old is not None:  # not a replacement: the held one goes out as well
                self.held[key] = old
                key = (dest, service + b"#" + str(number).encode(), key[2])
            if replace:
                self.counts["replace_not_held"] += 1
            if key[2] == 1:
                self.messages[dest] += 1
        timer = None
        if self.hold >= 0:
            timer = reactor.callLater(self.hold, self.deliver_held, key)
        self.held[key] = (pdu, number, timer, proto)

    def deliver_held(self, key: tuple[bytes, bytes, int]) -> None:
        """A held message reaches the handset: it can no longer be replaced."""
        item = self.held.pop(key, None)
        if item is None:
            return
        self.counts["delivered"] += 1
        if self.receipts and item[0].params["registered_delivery"].receipt != \
                RegisteredDeliveryReceipt.NO_SMSC_DELIVERY_RECEIPT_REQUESTED:
            self.send_receipt(item[3], item[0], item[1])

    def flush(self) -> int:
        keys = list(self.held)
        for key in keys:
            timer = self.held[key][2]
            if timer is not None and timer.active():
                timer.cancel()
            self.deliver_held(key)
        return len(keys)

    def throttled(self) -> bool:
        if self.throttle <= 0:
            return False
        now = time.monotonic()
        if now - self.window_start >= 1.0:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        return self.window_count > self.throttle

    def send_receipt(self, proto: Any, pdu: Any, number: int) -> None:
        stamp = time.strftime("%y%m%d%H%M", time.gmtime())
        text = (f"id:{number} sub:001 dlvrd:001 submit date:{stamp} done date:{stamp} "
                f"stat:DELIVRD err:000 text:").encode()
        dlr = self.deliver(pdu.params["destination_addr"].decode(),
                           pdu.params["source_addr"].decode(), text,
                           EsmClassType.SMSC_DELIVERY_RECEIPT, DataCodingDefault.SMSC_DEFAULT_ALPHABET)
        # The bind that submitted it may be gone (the ESME restarted): any bind of it will do.
        protos = [p for p in ([proto] if proto is not None else []) + self.bound() if p.isBound()]
        if not protos:
            self.counts["receipt_unsent"] += 1
            return
        self.counts["receipt_sent"] += 1
        d = protos[0].sendDataRequest(dlr)
        d.addCallbacks(lambda _: self.receipt_done("receipt_acked"),
                       lambda _: self.receipt_done("receipt_failed"))

    def receipt_done(self, outcome: str) -> None:
        self.counts[outcome] += 1
        answered = self.counts["receipt_acked"] + self.counts["receipt_failed"]
        if not self.held and answered == self.counts["receipt_sent"]:
            emit(event="receipts_idle", acked=self.counts["receipt_acked"],
                 failed=self.counts["receipt_failed"])

    @staticmethod
    def deliver(sender: str, dest: str, body: bytes, kind: Any, coding: Any,
                udhi: bool = False) -> DeliverSM:
        features = [EsmClassGsmFeatures.UDHI_INDICATOR_SET] if udhi else []
        return DeliverSM(
            service_type="", source_addr_ton=AddrTon.INTERNATIONAL, source_addr_npi=AddrNpi.ISDN,
            source_addr=sender.lstrip("+"), dest_addr_ton=AddrTon.UNKNOWN,
            dest_addr_npi=AddrNpi.ISDN, destination_addr=dest,
            esm_class=EsmClass(EsmClassMode.DEFAULT, kind, features), protocol_id=0,
            priority_flag=PriorityFlag.LEVEL_0,
            registered_delivery=RegisteredDelivery(
                RegisteredDeliveryReceipt.NO_SMSC_DELIVERY_RECEIPT_REQUESTED),
            replace_if_present_flag=ReplaceIfPresentFlag.DO_NOT_REPLACE,
            data_coding=DataCoding(schemeData=coding), sm_default_msg_id=0, short_message=body)

    # ---------------------------------------------------------------- control

    def bound(self) -> list[Any]:
        assert self.factory is not None
        out: list[Any] = []
        for manager in list(self.factory.bound_connections.values()):
            out.extend(manager)
        return out

    def drop(self) -> None:
        for proto in self.bound():
            self.counts["dropped"] += 1
            proto.transport.abortConnection()

    def mo(self, spec: dict[str, Any]) -> None:
        raw = spec["text"].encode("utf-16-be")
        chunks = [raw[i:i + 134] for i in range(0, len(raw), 134)] if len(raw) > 140 else [raw]
        ref = int(spec.get("ref", 0x42)) & 0xFF
        for n, chunk in enumerate(chunks, 1):
            body = chunk if len(chunks) == 1 else bytes([5, 0, 3, ref, len(chunks), n]) + chunk
            pdu_args = (spec["sender"], spec["dest"], body, EsmClassType.DEFAULT,
                        DataCodingDefault.UCS2, len(chunks) > 1)
            self.deliver_mo(spec["id"], n, pdu_args, 1)

    def deliver_mo(self, mo_id: str, part: int, pdu_args: tuple[Any, ...], attempt: int) -> None:
        protos = [p for p in self.bound() if p.isBound()]
        if not protos:
            emit(event="mo_resp", id=mo_id, part=part, status="NO_BIND", attempt=attempt)
            return
        d = protos[0].sendDataRequest(self.deliver(*pdu_args))

        def ok(_: Any) -> None:
            emit(event="mo_resp", id=mo_id, part=part, status="ESME_ROK", attempt=attempt)

        def failed(failure: Any) -> None:
            status = getattr(getattr(failure.value, "response", None), "status", None)
            emit(event="mo_resp", id=mo_id, part=part,
                 status=getattr(status, "name", type(failure.value).__name__), attempt=attempt)
            if attempt < MAX_REDELIVERIES:
                reactor.callLater(0.05, self.deliver_mo, mo_id, part, pdu_args, attempt + 1)

        d.addCallbacks(ok, failed)

    def stats(self) -> None:
        dups = sum(1 for c in self.accepted_keys.values() if c > 1)
        per_dest = Counter(self.messages.values())
        emit(event="stats", duplicates=dups, unique_accepted=len(self.accepted_keys),
             binds=len(self.bound()), held=len(self.held), destinations=len(self.messages),
             per_dest={str(k): v for k, v in sorted(per_dest.items())}, **dict(self.counts))

    def command(self, line: str) -> None:
        verb, _, arg = line.strip().partition(" ")
        if verb == "throttle":
            self.throttle = int(arg)
        elif verb == "hostile":
            self.hostile = arg == "on"
        elif verb == "receipts":
            self.receipts = arg == "on"
        elif verb == "drop":
            self.drop()
        elif verb == "drop-after":
            self.drop_after = int(arg)
        elif verb == "mo":
            self.mo(json.loads(arg))
        elif verb == "stats":
            self.stats()
        elif verb == "notify-at":
            self.notify_at = int(arg)
        elif verb == "flush":
            emit(event="flushed", count=self.flush())
        elif verb == "dump":
            with open(arg, "w", encoding="utf-8") as out:
                json.dump({k.decode(): v for k, v in self.messages.items()}, out)
        elif verb == "quit":
            reactor.stop()
            return
        elif verb:
            emit(event="error", reason=f"unknown command {verb!r}")
            return
        emit(event="ok", command=verb)


class Control(LineReceiver):
    """Commands on stdin."""

    delimiter = b"\n"

    def __init__(self, smsc: Smsc) -> None:
        self.smsc = smsc

    def lineReceived(self, line: bytes) -> None:
        self.smsc.command(line.decode())

    def connectionLost(self, reason: Any = None) -> None:
        if reactor.running:
            reactor.stop()  # the test went away: so do we


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--system-id", default="dispatchd")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--max-binds", type=int, default=8)
    parser.add_argument("--throttle", type=int, default=0)
    parser.add_argument("--receipts", action="store_true")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="seconds a message is held (replaceable) before delivery; <0: until flush")
    args = parser.parse_args()
    smsc = Smsc(args.throttle, args.receipts, args.hold)
    config = SMPPServerConfig(msgHandler=smsc.handle,
                              systems={args.system_id: {"max_bindings": args.max_binds}},
                              enquireLinkTimerSecs=300, inactivityTimerSecs=600)
    portal = Portal(Realm(), [Checker({args.system_id: args.password})])
    factory = SMPPServerFactory(config, auth_portal=portal)
    smsc.factory = factory
    port = reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    stdio.StandardIO(Control(smsc))
    emit(event="listening", port=port.getHost().port)
    reactor.run()


if __name__ == "__main__":
    main()
