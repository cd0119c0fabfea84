"""``dispatchd classify``: JSON lines in, one JSON line out per input.

Input lines: ``{"text": "...", "lang": "zh"|"en" (optional), "id": ... (optional, echoed),
"fields": {...} (optional)}``.  Output lines: ``category`` (natural_disaster, accident,
public_health, social_security or null), ``subtype``, ``agencies``, ``grade`` (I-IV),
``grade_zh``, ``colour``, ``reasons``, ``evidence`` and ``figures``.  A bad line gets
``{"line": n, "error": "..."}`` and processing goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from intake.config import IntakeConfigError
from intake.pipeline import Intake

#: Longest accepted input line (characters); longer lines are answered with an error.
MAX_LINE_CHARS = 64 * 1024

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_CONFIG = 2


def classify_line(intake: Intake, data: dict[str, Any]) -> dict[str, Any]:
    """Classification and grade of one decoded input object, as a JSON-ready dict."""
    text = data.get("text")
    if not isinstance(text, str):
        raise ValueError("'text' must be a string")
    lang = data.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise ValueError("'lang' must be a string")
    raw_fields = data.get("fields") or {}
    if not isinstance(raw_fields, dict):
        raise ValueError("'fields' must be an object")
    fields = tuple((str(k), str(v)) for k, v in raw_fields.items())
    figures, cls, grade = intake.assess_text(text, fields, lang)
    out: dict[str, Any] = {}
    if "id" in data:
        out["id"] = data["id"]
    out.update(
        {
            "category": cls.category.value if cls.category else None,
            "subtype": cls.subtype,
            "agencies": list(cls.agencies),
            "grade": grade.grade.name,
            "grade_zh": grade.grade.zh,
            "colour": grade.grade.colour,
            "reasons": [r.detail for r in grade.reasons if r.applied]
            + [f"(noted) {r.detail}" for r in grade.reasons if not r.applied],
            "confidence": cls.confidence,
            "evidence": [
                {"kind": e.kind, "matched": e.matched, "detail": e.detail} for e in cls.evidence
            ],
            "figures": [
                {
                    "kind": f.kind.value,
                    "value": f.value,
                    "qualifier": f.qualifier.value,
                    "matched": f.matched,
                }
                for f in figures
            ],
        }
    )
    return out


def run_classify(
    in_stream: TextIO,
    out_stream: TextIO,
    rules_dir: Path | str | None = None,
    err_stream: TextIO | None = None,
) -> int:
    """Classify JSON lines from ``in_stream`` to ``out_stream``; returns an exit status.

    0 when every line was classified, 1 when some lines were bad (each answered with an
    error line), 2 when the rules could not be loaded (message on ``err_stream``).
    """
    try:
        intake = Intake.from_dir(rules_dir)
    except IntakeConfigError as exc:
        if err_stream is not None:
            err_stream.write(f"dispatchd classify: {exc}\n")
        return EXIT_CONFIG
    status = EXIT_OK
    for number, line in enumerate(in_stream, start=1):
        if not line.strip():
            continue
        try:
            if len(line) > MAX_LINE_CHARS:
                raise ValueError(f"line longer than {MAX_LINE_CHARS} characters")
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("each line must be a JSON object")
            result = classify_line(intake, data)
        except (ValueError, RecursionError) as exc:
            status = EXIT_BAD_INPUT
            result = {"line": number, "error": str(exc)}
        out_stream.write(json.dumps(result, ensure_ascii=False) + "\n")
    return status
