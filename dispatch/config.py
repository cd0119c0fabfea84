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


class DeviceSettings(_Section):
    """A serial device the daemon keeps open (a radio, satphone or modem port)."""

    name: Name
    port: Annotated[str, Field(min_length=1, max_length=255)]
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    required: bool = False
    retry_s: Annotated[float, Field(ge=0.1, le=3600)] = 5.0


class SipListenSettings(_Section):
    """One SIP listener: transport, address and port (0 = any free port)."""

    transport: Literal["udp", "tcp", "tls"] = "udp"
    host: str = "127.0.0.1"
    port: Port = 5060


class SipRegistrarSettings(_Section):
    """The registrar: digest authentication, binding lifetimes, abuse limits."""

    realm: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    default_expires: Annotated[int, Field(ge=1, le=86400)] = 3600
    min_expires: Annotated[int, Field(ge=1, le=86400)] = 60
    max_expires: Annotated[int, Field(ge=1, le=7 * 86400)] = 7200
    max_bindings: Annotated[int, Field(ge=1, le=100)] = 10
    nonce_ttl: Annotated[float, Field(gt=0, le=3600, strict=False)] = 300.0
    algorithms: Annotated[tuple[Literal["MD5", "SHA-256"], ...],
                          Field(min_length=1, strict=False)] = ("MD5", "SHA-256")
    rate: Annotated[float, Field(gt=0, le=10000, strict=False)] = 5.0
    burst: Annotated[float, Field(ge=1, le=100000, strict=False)] = 20.0
    max_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    failure_window: Annotated[float, Field(gt=0, le=86400, strict=False)] = 60.0
    block_for: Annotated[float, Field(ge=0, le=86400, strict=False)] = 300.0
    exempt_networks: Annotated[tuple[str, ...], Field(strict=False)] = ()
    check_digest_uri: bool = True
    require_qop: bool = True
    secret_file: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SipRegistrarSettings:
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need min_expires <= default_expires <= max_expires")
        import ipaddress

        for network in self.exempt_networks:
            try:
                ipaddress.ip_network(network)
            except ValueError:
                raise ValueError(f"exempt_networks: {network!r} is not a network"
                                 ) from None
        return self


class SipSettings(_Section):
    """The SIP stack: listeners, domain, limits, session timers, the registrar."""

    enabled: bool = False
    listen: Annotated[tuple[SipListenSettings, ...], Field(min_length=1, strict=False)] = (
        SipListenSettings(),)
    advertise: str | None = None
    domain: Annotated[str, Field(min_length=1, max_length=128)] = "dispatch.local"
    tls_cert: str | None = None
    tls_key: str | None = None
    max_message: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 65536
    max_headers: Annotated[int, Field(ge=16, le=1024)] = 128
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1024
    max_calls: Annotated[int, Field(ge=1, le=100_000)] = 5000
    session_expires: Annotated[int, Field(ge=2, le=86400)] = 1800
    ringback_180: bool = True
    agent_login_on_register: bool = False
    user_agent: Annotated[str, Field(min_length=1, max_length=64)] = "dispatchd"
    registrar: SipRegistrarSettings = SipRegistrarSettings()

    @model_validator(mode="after")
    def _check_tls(self) -> SipSettings:
        wants_tls = any(listen.transport == "tls" for listen in self.listen)
        if wants_tls and not (self.tls_cert and self.tls_key):
            raise ValueError("a tls listener needs tls_cert and tls_key")
        return self


_Tables = Annotated[tuple[dict[str, Any], ...], Field(strict=False)]


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
    # TOML arrays are lists; accept them (non-strict) into an immutable tuple.
    devices: Annotated[tuple[DeviceSettings, ...], Field(strict=False)] = ()
    sip: SipSettings = SipSettings()
    # Telephony tables are validated by telephony's own loaders (which name the
    # key path of every problem); see :meth:`telephony`.
    routing: dict[str, Any] = Field(default_factory=dict)
    acd: dict[str, Any] = Field(default_factory=dict)
    hotlines: _Tables = ()
    ringdowns: _Tables = ()
    trunks: _Tables = ()
    queues: _Tables = ()
    agents: _Tables = ()

    @model_validator(mode="after")
    def _unique_devices(self) -> Settings:
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ValueError(f"devices: name {device.name!r} is used twice")
            seen.add(device.name)
        return self

    @model_validator(mode="after")
    def _check_telephony(self) -> Settings:
        if self.sip.enabled or self.hotlines or self.queues or self.trunks or self.routing:
            from telephony.acd.config import ConfigError as TableError

            try:
                self.telephony()
            except TableError as exc:
                raise ValueError(f"{exc.key}: {exc.message}") from None
        return self

    def telephony(self) -> Any:
        """Queues, agents, routing and trunks as telephony's typed settings.

        Raises :class:`telephony.acd.config.ConfigError` naming the key path.
        """
        from telephony.b2bua.config import load_telephony

        return load_telephony({
            "routing": self.routing, "acd": self.acd, "hotlines": list(self.hotlines),
            "ringdowns": list(self.ringdowns), "trunks": list(self.trunks),
            "queues": list(self.queues), "agents": list(self.agents),
        })

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
