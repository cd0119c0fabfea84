"""The broadcast registry in the database, targeting, templated campaigns and CAP export.

Theory of operation.  Residents are imported from CSV (:mod:`sms.recipients`
parses, in a worker thread, with per-row errors) and *replace* the stored
registry in one transaction, so a restart keeps exactly the last good import.
The opt-out list is its own table (numbers inside or outside the registry).
For targeting, a :class:`~sms.targeting.RecipientIndex` is built from the
table on first use and rebuilt after each import.

A campaign from an area is: targets (circle, polygon, district, group, list)
resolved to residents, each sent the template's text in their own language;
opted-out residents are left out unless the template's severity is
``extreme`` and ``[sms] opt_out_override = "extreme"``.  The targets, template,
values and per-language texts are kept in the campaign's ``target`` column, so
the CAP 1.2 alert can be exported later (severity from the linked incident's
grade when there is one, else from the template's severity).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select

from dispatch.audit import AuditTrail
from dispatch.campaigns import PRIORITY_INFORMATION, RecipientIn
from dispatch.models import CampaignRow, IncidentRow, OptOutRow, ResidentRow
from dispatch.storage import Database
from sms.cap import CapAlert, CapInfo, Grade, build_alert
from sms.errors import MsisdnError, SmsError
from sms.recipients import (
    ImportLimits,
    Language,
    Recipient,
    RowError,
    import_registry,
    open_registry,
)
from sms.recipients import normalise_opt_out as _normalise_opt_out
from sms.targeting import (
    AreaTarget,
    CircleTarget,
    DistrictCatalogue,
    DistrictTarget,
    GroupTarget,
    NumbersTarget,
    RecipientIndex,
    Target,
    TargetError,
    geometry_of,
    load_districts,
    parse_geometry,
)
from sms.templates import Severity, TemplateError, TemplateSet

log = logging.getLogger(__name__)

SEVERITY_GRADE = {Severity.EXTREME: Grade.I, Severity.SEVERE: Grade.II,
                  Severity.MODERATE: Grade.III, Severity.MINOR: Grade.IV}
MAX_ERRORS_SHOWN = 200


class RegistryUnavailable(SmsError):
    """Templates or districts could not be loaded (the message says which file and why)."""


@dataclass(frozen=True)
class ImportSummary:
    """What an import stored and what it refused."""

    imported: int
    merged: int
    rows_read: int
    errors: tuple[RowError, ...]
    errors_dropped: int
    opted_out: int

    def to_json(self) -> dict[str, Any]:
        """The API / CLI answer."""
        return {"imported": self.imported, "merged_duplicates": self.merged,
                "rows_read": self.rows_read, "opted_out": self.opted_out,
                "errors": [{"row": e.row, "column": e.column, "message": e.message}
                           for e in self.errors[:MAX_ERRORS_SHOWN]],
                "errors_total": len(self.errors) + self.errors_dropped}


@dataclass(frozen=True)
class Planned:
    """A campaign worked out from targets and a template, not yet stored."""

    recipients: list[RecipientIn]
    priority: int
    severity: Severity
    override_opt_out: bool
    opted_out: int
    target: dict[str, Any]


def parse_target(raw: Mapping[str, Any], default_country: str) -> Target:
    """One target from its JSON form (``kind``: circle/polygon/district/group/list)."""
    kind = raw.get("kind")
    try:
        if kind == "circle":
            return CircleTarget(float(raw["lat"]), float(raw["lon"]), float(raw["radius_m"]))
        if kind == "polygon":
            return AreaTarget(parse_geometry(raw["geometry"]), str(raw.get("label", "")))
        if kind == "district":
            return DistrictTarget(str(raw["key"]))
        if kind == "group":
            return GroupTarget(str(raw["name"]))
        if kind == "list":
            numbers = raw["numbers"]
            if not isinstance(numbers, list):
                raise TargetError("numbers must be a list")
            return NumbersTarget.parse([str(n) for n in numbers], default_country)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, TargetError):
            raise
        raise TargetError(f"{kind} target: missing or bad field {exc}") from None
    raise TargetError(f"unknown target kind {kind!r} (circle, polygon, district, group, list)")


class ResidentService:
    """The residents registry of the daemon: import, targeting, templated campaigns, CAP."""

    name = "residents"

    def __init__(self, db: Database, audit: AuditTrail, clock: Callable[[], float], *,
                 templates_file: str, districts_file: str, default_country: str = "86",
                 opt_out_override: str = "extreme", node: str = "dispatchd") -> None:
        """Nothing is read until :meth:`start`."""
        self.db, self.audit, self.clock = db, audit, clock
        self.templates_file, self.districts_file = templates_file, districts_file
        self.default_country = default_country
        self.opt_out_override = opt_out_override
        self.node = node
        self.templates: TemplateSet | None = None
        self.districts = DistrictCatalogue(())
        self.problems: list[str] = []
        self._index: RecipientIndex | None = None
        self._lock = asyncio.Lock()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def start(self) -> None:
        """Load templates and districts; a broken file is reported, not fatal."""
        self.problems = []
        try:
            self.templates = TemplateSet.load(self.templates_file)
        except (OSError, SmsError) as exc:
            self.problems.append(f"templates {self.templates_file}: {exc}")
        try:
            self.districts = load_districts(self.districts_file)
        except (OSError, SmsError) as exc:
            self.problems.append(f"districts {self.districts_file}: {exc}")
        for problem in self.problems:
            log.error("broadcast registry: %s", problem)

    async def stop(self) -> None:
        """Nothing to release."""

    def health(self) -> dict[str, Any]:
        """Files loaded and whether the index is built."""
        return {"templates": self.templates.ids() if self.templates else [],
                "districts": len(list(self.districts)), "indexed": self._index is not None,
                "problems": self.problems}

    # ------------------------------------------------------------ import

    async def import_file(self, path: str, *, actor: str,
                          opt_out_numbers: Sequence[str] = ()) -> ImportSummary:
        """Replace the registry with the CSV at ``path`` (and add ``opt_out_numbers``)."""
        def parse() -> Any:
            with open_registry(path) as stream:
                return import_registry(stream, default_country=self.default_country,
                                       limits=ImportLimits())
        report = await asyncio.to_thread(parse)
        try:
            opt_out = _normalise_opt_out(opt_out_numbers, self.default_country)
        except MsisdnError as exc:
            raise SmsError(f"opt-out list: {exc}") from None
        return await self._store(report.imported, report, opt_out, actor, path)

    async def import_text(self, text: str, *, actor: str) -> ImportSummary:
        """Replace the registry with CSV text (the HTTP upload)."""
        report = await asyncio.to_thread(
            lambda: import_registry(text.splitlines(keepends=True),
                                    default_country=self.default_country))
        return await self._store(report.imported, report, frozenset(), actor, "upload")

    async def _store(self, people: Sequence[Recipient], report: Any, opt_out: frozenset[str],
                     actor: str, source: str) -> ImportSummary:
        now = self._now()
        rows = [{"msisdn": r.msisdn, "name": r.name, "language": r.language,
                 "address": r.address, "lat": r.lat, "lon": r.lon, "district": r.district,
                 "groups": sorted(r.groups), "opt_out": r.opt_out, "imported_at": now}
                for r in people]
        async with self._lock:
            async with self.db.session() as s:
                await s.execute(delete(ResidentRow))
                for start in range(0, len(rows), 5000):
                    await s.execute(insert(ResidentRow), rows[start:start + 5000])
                known = set((await s.scalars(select(OptOutRow.msisdn))).all())
                new = [{"msisdn": m, "source": f"import:{source}"[:64], "at": now}
                       for m in sorted(opt_out - known)]
                if new:
                    await s.execute(insert(OptOutRow), new)
                summary = ImportSummary(len(rows), len(report.merged), report.rows_read,
                                        tuple(report.errors), report.errors_dropped,
                                        sum(1 for r in people if r.opt_out) + len(new))
                self.audit.record(s, actor=actor, action="residents.imported",
                                  subject="residents",
                                  details={"source": source, "imported": summary.imported,
                                           "errors": summary.to_json()["errors_total"]})
            self._index = None
        return summary

    async def count(self) -> int:
        """Residents stored."""
        async with self.db.session() as s:
            return int(await s.scalar(select(func.count()).select_from(ResidentRow)) or 0)

    async def index(self) -> tuple[RecipientIndex, frozenset[str]]:
        """The registry indexed for targeting (built once per import), and the opt-out list."""
        async with self._lock:
            async with self.db.session() as s:
                opt_out = frozenset((await s.scalars(select(OptOutRow.msisdn))).all())
                if self._index is None:
                    rows = (await s.execute(select(
                        ResidentRow.msisdn, ResidentRow.name, ResidentRow.language,
                        ResidentRow.address, ResidentRow.lat, ResidentRow.lon,
                        ResidentRow.district, ResidentRow.groups, ResidentRow.opt_out))).all()
                    people = [Recipient(m, n, "en" if lang == "en" else "zh", a, la, lo, d,
                                        frozenset(g or ()), bool(o) or m in opt_out)
                              for m, n, lang, a, la, lo, d, g, o in rows]
                    self._index = await asyncio.to_thread(RecipientIndex, people, self.districts)
            return self._index, opt_out

    # ------------------------------------------------------------ targeting

    def targets(self, raw: Sequence[Mapping[str, Any]]) -> list[Target]:
        """Parse the JSON targets (raises :class:`TargetError`)."""
        return [parse_target(t, self.default_country) for t in raw]

    def _override(self, severity: Severity) -> bool:
        return severity is Severity.EXTREME and self.opt_out_override == "extreme"

    async def preview(self, raw: Sequence[Mapping[str, Any]],
                      severity: Severity = Severity.SEVERE) -> dict[str, Any]:
        """Counts before sending: total, per target, opted out, by language."""
        targets = self.targets(raw)
        index, opt_out = await self.index()
        override = self._override(severity)
        p = index.preview(targets, override_opt_out=override, opt_out=opt_out)
        return {"count": p.count, "per_target": list(p.per_target), "opted_out": p.opted_out,
                "opt_out_overridden": override, "unregistered_numbers": p.unregistered_numbers,
                "by_language": dict(p.by_language)}

    async def reach(self, raw: Sequence[Mapping[str, Any]], severity: Severity
                    ) -> tuple[list[tuple[str, Language]], int, bool]:
        """Whom the targets reach: (number, language) pairs, how many opted out, and
        whether opt-outs were overridden (the highest severity, if configured)."""
        targets = self.targets(raw)
        index, opt_out = await self.index()
        override = self._override(severity)
        res = index.resolve(targets, override_opt_out=override, opt_out=opt_out)
        people = [(r.msisdn, r.language) for r in index.recipients_of(res)]
        people += [(m, "zh") for m in res.extra_msisdns]
        return people, res.opted_out, override

    async def plan(self, raw: Sequence[Mapping[str, Any]], template_id: str,
                   values: Mapping[str, str],
                   per_language: Mapping[str, Mapping[str, str]] | None = None) -> Planned:
        """Resolve targets and render the template per recipient language."""
        if self.templates is None:
            raise RegistryUnavailable("; ".join(self.problems) or "no templates loaded")
        template = self.templates[template_id]
        extra = {k: v for k, v in (per_language or {}).items() if k in ("zh", "en")}
        rendered = self.templates.render_all(template_id, values, extra)  # type: ignore[arg-type]
        reached, opted_out, override = await self.reach(raw, template.severity)
        texts = {lang: r.text for lang, r in rendered.items()}
        people = [RecipientIn(msisdn, lang, texts[lang]) for msisdn, lang in reached]
        priority = min(max(template.priority - 1, 0), PRIORITY_INFORMATION)
        target = {"targets": list(raw), "template": template_id,
                  "severity": template.severity.value, "texts": texts,
                  "opted_out": opted_out, "override_opt_out": override}
        return Planned(people, priority, template.severity, override, opted_out, target)

    # ------------------------------------------------------------ CAP

    async def cap(self, campaign_id: str) -> bytes:
        """The campaign as a CAP 1.2 alert (raises LookupError, SmsError)."""
        async with self.db.session() as s:
            row = await s.get(CampaignRow, campaign_id)
            if row is None:
                raise LookupError(f"no campaign {campaign_id}")
            grade_value = None
            if row.incident_id:
                incident = await s.get(IncidentRow, row.incident_id)
                grade_value = incident.grade if incident is not None else None
        target = row.target or {}
        if grade_value is not None and 1 <= grade_value <= 4:
            grade = Grade(["I", "II", "III", "IV"][grade_value - 1])
        else:
            grade = SEVERITY_GRADE[Severity(target.get("severity", "severe"))]
        targets = self.targets(target.get("targets", []))
        areas, circles = geometry_of(targets, self.districts)
        texts: dict[str, str] = target.get("texts") or {}
        infos = tuple(CapInfo(lang, row.title, row.title, text, "")
                      for lang, text in texts.items())
        if not infos:
            text = await self._any_text(campaign_id)
            infos = (CapInfo("zh", row.title, row.title, text, ""),)
        desc = "; ".join(self._describe(t) for t in targets) or row.title
        return build_alert(CapAlert(
            identifier=f"{self.node}-{row.id}", sender=f"{self.node}@dispatchd",
            sent=row.created_at, grade=grade, categories=("Safety",), infos=infos,
            area_desc=desc[:1000], areas=areas, circles=circles,
            response_types=("Evacuate",) if grade is Grade.I else (),
            sender_name="dispatchd"))

    def _describe(self, target: Target) -> str:
        if isinstance(target, DistrictTarget):
            d = self.districts.get(target.key)
            return f"{d.name} {d.name_en}".strip()
        if isinstance(target, CircleTarget):
            return f"{target.radius_m:.0f} m around {target.lat:.5f},{target.lon:.5f}"
        if isinstance(target, AreaTarget):
            return target.label or "polygon"
        if isinstance(target, GroupTarget):
            return f"group {target.name}"
        return f"{len(target.msisdns)} numbers"

    async def _any_text(self, campaign_id: str) -> str:
        from dispatch.models import CampaignRecipientRow

        async with self.db.session() as s:
            text = await s.scalar(select(CampaignRecipientRow.text)
                                  .where(CampaignRecipientRow.campaign_id == campaign_id)
                                  .limit(1))
        return text or ""


__all__ = ["ImportSummary", "Planned", "RegistryUnavailable", "ResidentService", "TargetError",
           "TemplateError", "parse_target"]
