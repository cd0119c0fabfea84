"""Typed settings, validated once at start-up.

The daemon reads one TOML file (``conf/dispatchd.toml`` or whatever ``-c``
names); with no file at all every setting takes its embedded default.  The
file is validated strictly into frozen pydantic models: an unknown key, a
value of the wrong type or out of range is a :class:`ConfigError` that lists
one line per problem naming the file and the key path.  Nothing here exits the
process; :mod:`dispatch.cli` turns the error into exit code 2.

Secrets never live in the repository: the database URL may be overridden by
the ``DISPATCHD_DATABASE_URL`` environment variable, and its password may be
read from a file (``database.password_file``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DATABASE_URL_ENV = "DISPATCHD_DATABASE_URL"
WEBHOOK_SECRET_ENV = "DISPATCHD_WEBHOOK_SECRET"
MAX_CONFIG_BYTES = 4 * 1024 * 1024

Port = Annotated[int, Field(ge=0, le=65535)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class _Section(BaseModel):
    """Base of every section: strict types, no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NodeSettings(_Section):
    """Identity of this node and where it keeps its files."""

    name: Name = "dispatchd"
    data_dir: str = "var"


class DatabaseSettings(_Section):
    """Where incidents, calls, the audit trail and users are stored."""

    url: str | None = None
    password_file: str | None = None
    auto_migrate: bool | None = None
    echo: bool = False
    pool_size: Annotated[int, Field(ge=1, le=200)] = 10

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is not None:
            scheme = urlsplit(url).scheme.split("+")[0]
            if scheme not in ("sqlite", "postgresql", "postgres"):
                raise ValueError(
                    f"unsupported database {scheme or '(none)'!r}; "
                    "use sqlite:///PATH or postgresql://USER@HOST/DB"
                )
        return url


class HttpSettings(_Section):
    """The HTTP API, WebSocket event stream and web console listener."""

    host: str = "127.0.0.1"
    port: Port = 8080
    session_ttl_s: Annotated[int, Field(ge=60, le=7 * 86400)] = 12 * 3600
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    event_queue: Annotated[int, Field(ge=16, le=100_000)] = 1000


class LogSettings(_Section):
    """How the daemon logs: level, and human lines or JSON lines."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["auto", "text", "json"] = "auto"


class AuthSettings(_Section):
    """Log-in limits for operators and programs."""

    max_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    lockout_s: Annotated[int, Field(ge=1, le=86400)] = 300


class SshSettings(_Section):
    """The SSH console for operators and administrators."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 2222
    host_key: str | None = None
    idle_timeout_s: Annotated[int, Field(ge=10, le=86400)] = 1800
    max_sessions: Annotated[int, Field(ge=1, le=1000)] = 32


class IntakeSettings(_Section):
    """Rules for classifying, grading and correlating reports; the sensor webhook."""

    rules_dir: str | None = None
    webhook_secret_file: str | None = None

    def webhook_secret(self, environ: Mapping[str, str] | None = None) -> bytes | None:
        """The sensor webhook's shared secret: environment first, then the file."""
        env = os.environ if environ is None else environ
        if env.get(WEBHOOK_SECRET_ENV):
            return env[WEBHOOK_SECRET_ENV].encode()
        if self.webhook_secret_file:
            return Path(self.webhook_secret_file).read_bytes().strip() or None
        return None


class EmailIntakeSettings(_Section):
    """An SMTP listener that turns emailed messages into reports."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 2525
    max_message_bytes: Annotated[int, Field(ge=1024, le=50 * 1024 * 1024)] = 1024 * 1024
    recipients: Annotated[tuple[Annotated[str, Field(max_length=254)], ...],
                          Field(strict=False)] = ()


class MediaSettings(_Section):
    """RTP media anchoring: the port range legs bind, dead media, recordings and prompts."""

    enabled: bool = False
    bind_address: str = "127.0.0.1"
    advertise_address: str | None = None
    port_min: Annotated[int, Field(ge=1024, le=65534)] = 20000
    port_max: Annotated[int, Field(ge=1025, le=65535)] = 20999
    dead_media_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0
    record: bool = True
    recordings_dir: str = "var/recordings"
    prompts_dir: str = "conf/prompts"
    symmetric_rtp: bool = True
    max_legs: Annotated[int, Field(ge=2, le=20000)] = 2000

    @field_validator("bind_address", "advertise_address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
        return value

    @model_validator(mode="after")
    def _check_range(self) -> MediaSettings:
        first = self.port_min + self.port_min % 2
        if self.port_max < first + 1:
            raise ValueError(f"media: port_min..port_max ({self.port_min}..{self.port_max}) "
                             "holds no even/odd RTP/RTCP port pair")
        unspecified = ipaddress.ip_address(self.bind_address).is_unspecified
        if unspecified and self.advertise_address is None:
            raise ValueError("media: bind_address is unspecified; set advertise_address "
                             "(the address phones send RTP to)")
        return self


class DeviceSettings(_Section):
    """A serial device the daemon keeps open (a radio, satphone or modem port)."""

    name: Name
    port: Annotated[str, Field(min_length=1, max_length=255)]
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    required: bool = False
    retry_s: Annotated[float, Field(ge=0.1, le=3600)] = 5.0


class Settings(_Section):
    """Every setting of the daemon; one frozen tree passed in explicitly."""

    node: NodeSettings = NodeSettings()
    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    auth: AuthSettings = AuthSettings()
    ssh: SshSettings = SshSettings()
    intake: IntakeSettings = IntakeSettings()
    email_intake: EmailIntakeSettings = EmailIntakeSettings()
    media: MediaSettings = MediaSettings()
    # TOML arrays are lists; accept them (non-strict) into an immutable tuple.
    devices: Annotated[tuple[DeviceSettings, ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _unique_devices(self) -> Settings:
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ValueError(f"devices: name {device.name!r} is used twice")
            seen.add(device.name)
        return self

    def database_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The effective database URL: environment, then file, then the default.

        The default is SQLite in ``node.data_dir``; a ``password_file`` fills in
        the password of a URL that has none.
        """
        env = os.environ if environ is None else environ
        url = env.get(DATABASE_URL_ENV) or self.database.url
        if url is None:
            return f"sqlite:///{Path(self.node.data_dir) / 'dispatchd.db'}"
        if self.database.password_file:
            password = Path(self.database.password_file).read_text(encoding="utf-8").strip()
            parts = urlsplit(url)
            if parts.password is None and parts.hostname:
                user = parts.username or ""
                netloc = f"{user}:{quote(password, safe='')}@{parts.hostname}"
                if parts.port:
                    netloc += f":{parts.port}"
                url = urlunsplit(parts._replace(netloc=netloc))
        return url

    def auto_migrate(self, url: str) -> bool:
        """Whether to upgrade the schema at start: by default SQLite only."""
        if self.database.auto_migrate is not None:
            return self.database.auto_migrate
        return url.startswith("sqlite")


class ConfigError(Exception):
    """A configuration file that cannot be used; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _describe(error: Mapping[str, Any]) -> str:
    loc = ""
    for part in error["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
        if ":" in message and not loc:
            return message
    where = f"{loc}: " if loc else ""
    if kind in ("missing",):
        return f"{where}required key is missing"
    return f"{where}{message} (got {error['input']!r})"


def parse_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Validate an already-parsed TOML document into :class:`Settings`."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = [f"{source}: {_describe(err)}" for err in exc.errors()]
        raise ConfigError(problems) from None


def load_settings(path: str | os.PathLike[str] | None) -> Settings:
    """Read and validate a configuration file; ``None`` means embedded defaults."""
    if path is None:
        return Settings()
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: file is larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: invalid TOML: {exc}"]) from None
    return parse_settings(data, source)


SECRET_KEYS = ("password", "secret", "token")


def mask_url(url: str) -> str:
    """A URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def effective_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets masked, for ``check-config``."""
    data = settings.model_dump(mode="json")
    data["database"]["url"] = mask_url(settings.database_url())
    masked: dict[str, Any] = _mask(data)
    return masked


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: ("***" if any(s in key for s in SECRET_KEYS) and item else _mask(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


#: Settings a SIGHUP applies at once; any other change needs a restart.
RELOADABLE = frozenset({"log.level", "log.format", "auth.max_failures", "auth.lockout_s"})


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted paths of every setting that differs between two trees."""
    return sorted(_diff(old.model_dump(mode="json"), new.model_dump(mode="json"), ""))


def _diff(a: Any, b: Any, prefix: str) -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        out: set[str] = set()
        for key in keys:
            out |= _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return set() if a == b else {prefix}
