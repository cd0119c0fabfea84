"""Structured logging: human lines on a terminal, JSON lines otherwise.

Code logs with the standard :mod:`logging` module and passes structured
fields through ``extra=``; both formatters show them.  The level and format
come from ``[log]`` and can be changed at run time (SIGHUP).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "color_message", "taskName"}


_CHATTY = ("uvicorn.access", "uvicorn.error", "alembic", "aiosqlite", "asyncio")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries (those given with ``extra=``)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as a single JSON line."""
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(record_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as one human-readable line (plus a traceback)."""
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={v}" for k, v in record_fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Install our handler on the root logger, replacing any earlier one."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.set_name("dispatchd")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "dispatchd"]:
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """Change the level of the whole process (used by SIGHUP reload)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    # Libraries' chatter (HTTP access lines, each migration step's set-up)
    # would drown a busy centre's log; it shows at debug level only.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else max(logging.WARNING, root.level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(quiet)
