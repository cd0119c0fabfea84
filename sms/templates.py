"""Broadcast message templates: loading, strict placeholders, per-language rendering.

Theory of operation: templates come from a TOML file (``conf/sms/templates.toml``)
as ``[[template]]`` tables with ``id``, ``severity``, ``priority``,
``max_parts`` and one text per language (``zh``, ``en``).  Loading checks every
placeholder: only plain ``{name}`` fields from :data:`KNOWN_PLACEHOLDERS` are
allowed (no format specs, conversions, attributes or indexes, which would let a
template reach into objects), and both languages must use the same set.
Rendering refuses a missing or an unexpected value (a typo such as
``shleter`` would otherwise pass silently), refuses control characters in the
values, and measures the result with :func:`sms.encoding.segment` against the
template's ``max_parts``.  Every error names the template and the key.

Values are campaign-wide, so the engine renders once per language and sends
each recipient the text of their language (:meth:`TemplateSet.render_all`).
"""

from __future__ import annotations

import enum
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .encoding import SPEC_MAX_PARTS, Encoding, check_text, segment
from .errors import EncodingError, SmsError, TooManyParts
from .recipients import LANGUAGES, Language

KNOWN_PLACEHOLDERS = frozenset({"area", "time", "shelter", "hotline", "sender", "route",
                                "event"})
MAX_TEMPLATE_CHARS = 2000
MAX_VALUE_CHARS = 200
MAX_TEMPLATES = 500
MAX_FILE_BYTES = 1024 * 1024


class Severity(enum.Enum):
    """Severity of a broadcast, in CAP 1.2 terms."""

    EXTREME = "extreme"
    SEVERE = "severe"
    MODERATE = "moderate"
    MINOR = "minor"


class TemplateError(SmsError, ValueError):
    """A template file, template or rendering is invalid; the message names template and key."""

    def __init__(self, template_id: str, message: str, key: str | None = None) -> None:
        """Keep the template id and the offending key (placeholder or TOML key)."""
        where = f"template {template_id!r}" + (f", key {key!r}" if key else "")
        super().__init__(f"{where}: {message}")
        self.template_id = template_id
        self.key = key


class TemplateTooLong(TemplateError):
    """The rendered text needs more SMS parts than the template's ``max_parts``."""


@dataclass(frozen=True, slots=True)
class Template:
    """One validated template; ``texts`` maps language to text, ``placeholders`` their names."""

    id: str
    severity: Severity
    priority: int
    max_parts: int
    texts: tuple[tuple[Language, str], ...]
    placeholders: frozenset[str]

    def text(self, language: Language) -> str:
        """The text for ``language``."""
        for lang, text in self.texts:
            if lang == language:
                return text
        raise TemplateError(self.id, "no text for this language", language)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered message in one language and what it costs to send."""

    template_id: str
    language: Language
    text: str
    encoding: Encoding
    parts: int


def placeholders_of(template_id: str, language: str, text: str) -> frozenset[str]:
    """The plain ``{name}`` fields of ``text``; anything fancier raises :class:`TemplateError`."""
    names: set[str] = set()
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:  # a lone "{" or "}"
        raise TemplateError(template_id, f"{language} text: {exc} (write {{{{ or }}}})",
                            language) from exc
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(template_id, f"{language} text: only plain {{name}} "
                                f"placeholders are allowed, got {{{name}...}}", name or "{}")
        if name not in KNOWN_PLACEHOLDERS:
            raise TemplateError(template_id, f"{language} text: unknown placeholder; "
                                f"known are {sorted(KNOWN_PLACEHOLDERS)}", name)
        names.add(name)
    return frozenset(names)


def _int_field(tid: str, raw: Mapping[str, Any], key: str, low: int, high: int,
               default: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TemplateError(tid, f"must be an integer {low}..{high}, got {value!r}", key)
    return value


def parse_template(raw: Mapping[str, Any]) -> Template:
    """Validate one ``[[template]]`` table."""
    tid = raw.get("id")
    if not isinstance(tid, str) or not tid.isidentifier():
        raise TemplateError(str(tid), "id must be an identifier", "id")
    unknown = set(raw) - {"id", "severity", "priority", "max_parts", *LANGUAGES}
    if unknown:
        raise TemplateError(tid, "unknown key", sorted(unknown)[0])
    try:
        severity = Severity(raw.get("severity"))
    except ValueError:
        raise TemplateError(tid, f"severity must be one of {[s.value for s in Severity]}",
                            "severity") from None
    priority = _int_field(tid, raw, "priority", 1, 9, 5)
    max_parts = _int_field(tid, raw, "max_parts", 1, SPEC_MAX_PARTS, 4)
    texts: list[tuple[Language, str]] = []
    sets: list[frozenset[str]] = []
    for lang in LANGUAGES:
        text = raw.get(lang)
        if not isinstance(text, str) or not text.strip():
            raise TemplateError(tid, "text is missing or empty", lang)
        if len(text) > MAX_TEMPLATE_CHARS:
            raise TemplateError(tid, f"text longer than {MAX_TEMPLATE_CHARS}", lang)
        try:
            check_text(text)
        except EncodingError as exc:
            raise TemplateError(tid, str(exc), lang) from exc
        texts.append((lang, text))
        sets.append(placeholders_of(tid, lang, text))
    if len(set(sets)) != 1:
        diff = sorted(sets[0] ^ sets[1])
        raise TemplateError(tid, "zh and en texts must use the same placeholders", diff[0])
    return Template(tid, severity, priority, max_parts, tuple(texts), sets[0])


class TemplateSet:
    """The templates of one file, by id."""

    def __init__(self, templates: list[Template]) -> None:
        """Index ``templates``; ids must be unique."""
        self._by_id: dict[str, Template] = {}
        for t in templates:
            if t.id in self._by_id:
                raise TemplateError(t.id, "defined twice", "id")
            self._by_id[t.id] = t

    @classmethod
    def from_toml(cls, data: bytes | str) -> TemplateSet:
        """Parse a templates TOML document (size-limited)."""
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if len(text.encode("utf-8")) > MAX_FILE_BYTES:
            raise TemplateError("*", f"file larger than {MAX_FILE_BYTES} bytes")
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TemplateError("*", f"not valid TOML: {exc}") from exc
        raw = doc.get("template", [])
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise TemplateError("*", "expected [[template]] tables", "template")
        if len(raw) > MAX_TEMPLATES:
            raise TemplateError("*", f"more than {MAX_TEMPLATES} templates", "template")
        return cls([parse_template(t) for t in raw])

    @classmethod
    def load(cls, path: str) -> TemplateSet:
        """Read and parse the TOML file at ``path``."""
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        return cls.from_toml(data)

    def __getitem__(self, template_id: str) -> Template:
        """The template with this id, or :class:`TemplateError`."""
        try:
            return self._by_id[template_id]
        except KeyError:
            raise TemplateError(template_id, "no such template") from None

    def ids(self) -> tuple[str, ...]:
        """Template ids in file order."""
        return tuple(self._by_id)

    def render(self, template_id: str, language: Language,
               values: Mapping[str, str]) -> Rendered:
        """Fill ``template_id`` in ``language`` with ``values`` and check its part count."""
        template = self[template_id]
        for key in sorted(template.placeholders - set(values)):
            raise TemplateError(template_id, "no value given for placeholder", key)
        for key in sorted(set(values) - template.placeholders):
            raise TemplateError(template_id, "value given for a placeholder the template "
                                "does not use", key)
        for key, value in values.items():
            if not isinstance(value, str):
                raise TemplateError(template_id, "value must be text", key)
            if len(value) > MAX_VALUE_CHARS:
                raise TemplateError(template_id, f"value longer than {MAX_VALUE_CHARS}", key)
            if "\n" in value or "\r" in value:
                raise TemplateError(template_id, "line breaks are not allowed in a value", key)
            try:
                check_text(value)
            except EncodingError as exc:
                raise TemplateError(template_id, str(exc), key) from exc
        text = template.text(language).format_map(values)
        try:
            seg = segment(text, max_parts=template.max_parts)
        except TooManyParts as exc:
            raise TemplateTooLong(template_id, f"{language} text needs {exc.parts_needed} "
                                  f"SMS parts, max_parts is {template.max_parts}",
                                  language) from exc
        return Rendered(template_id, language, text, seg.encoding, seg.total)

    def render_all(self, template_id: str, values: Mapping[str, str],
                   per_language: Mapping[Language, Mapping[str, str]] | None = None,
                   ) -> dict[Language, Rendered]:
        """Render every language (what the approval screen shows; what the engine sends).

        ``values`` apply to all languages; ``per_language`` adds or overrides
        values for one language (``{"en": {"area": "Guancheng"}}``), so an
        English text does not carry Chinese place names and fall back to UCS-2.
        """
        extra = per_language or {}
        return {lang: self.render(template_id, lang, {**values, **extra.get(lang, {})})
                for lang in LANGUAGES}
