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
    event_loop: Literal["asyncio", "auto", "uvloop"] = "asyncio"


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


class SmtpSettings(_Section):
    """The mail server that carries notifications to officials (aiosmtplib)."""

    host: str = "127.0.0.1"
    port: Port = 25
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    #: The password comes from this environment variable (never from the file).
    password_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] = "DISPATCHD_SMTP_PASSWORD"
    sender: Annotated[str, Field(min_length=3, max_length=254)] = "dispatchd@localhost"
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    #: Path of a CA bundle to trust (a private mail relay); unset = the system's.
    ca_file: str | None = None

    def password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The SMTP password from the environment, if set."""
        env = os.environ if environ is None else environ
        return env.get(self.password_env) or None


class ShiftSettings(_Section):
    """A named shift starting at a local time of day (statistics per shift)."""

    name: Name
    start: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class DispatchSettings(_Section):
    """Incidents, units, response plans (预案), duty roster and notifications."""

    #: Travel distance = straight-line distance x road_factor.
    road_factor: Annotated[float, Field(ge=1.0, le=5.0)] = 1.3
    #: An unacknowledged notification goes to the next official after this long.
    ack_timeout_minutes: Annotated[float, Field(gt=0, le=1440)] = 10.0
    #: Delivery attempts per notification, and the first retry delay (doubles each time).
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    retry_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    #: How often the notifier looks for due deliveries and escalations.
    tick_s: Annotated[float, Field(ge=0.1, le=300)] = 5.0
    plans_dir: str | None = None
    units_file: str | None = None
    roster_file: str | None = None
    #: Base of the acknowledgement links put in notifications (the console's URL).
    public_url: str = "http://127.0.0.1:8080"
    #: Secret that signs acknowledgement links; the environment variable wins.
    ack_secret_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] = "DISPATCHD_ACK_SECRET"
    email: bool = False
    smtp: SmtpSettings = SmtpSettings()
    #: Local-time shifts for statistics, and the offset of local time from UTC.
    shifts: Annotated[tuple[ShiftSettings, ...], Field(strict=False)] = (
        ShiftSettings(name="day", start="08:00"), ShiftSettings(name="night", start="20:00"))
    utc_offset_hours: Annotated[float, Field(ge=-14, le=14)] = 8.0
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
    hold_prompt: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{0,64}$")] = "hold"
    recording_retention_days: Annotated[int, Field(ge=0, le=36500)] = 0
    join_tone: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{0,64}$")] = "join"
    leave_tone: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{0,64}$")] = "leave"

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


MAX_MAP_BYTES = 10 * 1024 * 1024
MAX_MAP_FEATURES = 10_000


def read_districts(path: str) -> dict[str, Any]:
    """Read and check a GeoJSON FeatureCollection of district polygons for the map.

    Each feature is a Polygon or MultiPolygon with longitude/latitude pairs and a
    ``name`` (``name_en`` optional).  Raises ValueError saying what is wrong.
    """
    import json

    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size > MAX_MAP_BYTES:
        raise ValueError(f"{path} is {size} bytes; the limit is {MAX_MAP_BYTES}")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" \
            or not isinstance(doc.get("features"), list):
        raise ValueError(f"{path} is not a GeoJSON FeatureCollection")
    if len(doc["features"]) > MAX_MAP_FEATURES:
        raise ValueError(f"{path} has more than {MAX_MAP_FEATURES} features")

    def ring_ok(ring: Any) -> bool:
        return isinstance(ring, list) and len(ring) >= 4 and all(
            isinstance(pt, list) and len(pt) >= 2
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in pt[:2])
            and -180 <= pt[0] <= 180 and -90 <= pt[1] <= 90 for pt in ring)

    for i, feature in enumerate(doc["features"]):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        props = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(props, dict) or not isinstance(props.get("name"), str):
            raise ValueError(f"{path}: feature {i} has no properties.name")
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
        polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else None
        if not isinstance(polygons, list) or not all(
                isinstance(poly, list) and poly and all(ring_ok(r) for r in poly)
                for poly in polygons):
            raise ValueError(f"{path}: feature {i} ({props['name']}) is not a valid "
                             "Polygon or MultiPolygon of lon/lat rings")
    return doc


class ConsoleSettings(_Section):
    """The web console: layers for its offline map."""

    districts_geojson: str | None = None

    @field_validator("districts_geojson")
    @classmethod
    def _readable_map(cls, value: str | None) -> str | None:
        if value is not None:
            read_districts(value)
        return value


class SmppBindSettings(_Section):
    """One SMSC reached over SMPP 3.4 (``[[sms.smpp]]``): ``binds`` transceivers to it."""

    name: Name
    host: Annotated[str, Field(min_length=1, max_length=255)]
    port: Annotated[int, Field(ge=1, le=65535)] = 2775
    system_id: Annotated[str, Field(min_length=1, max_length=15)]
    password_env: Annotated[str, Field(min_length=1, max_length=64,
                                       pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    system_type: Annotated[str, Field(max_length=12)] = ""
    tls: bool = False
    window: Annotated[int, Field(ge=1, le=1000)] = 50
    rate_per_s: Annotated[float, Field(ge=0, le=100_000, strict=False)] = 0.0
    binds: Annotated[int, Field(ge=1, le=32)] = 1
    receipt_ids: Literal["same", "hex-as-decimal", "decimal-as-hex"] = "same"
    enquire_link_s: Annotated[float, Field(ge=1, le=3600, strict=False)] = 30.0
    response_timeout_s: Annotated[float, Field(ge=0.5, le=600, strict=False)] = 30.0

    def password(self, environ: Mapping[str, str] | None = None) -> str:
        """The bind password, from the environment variable ``password_env`` names."""
        env = os.environ if environ is None else environ
        value = env.get(self.password_env)
        if value is None:
            raise ConfigError([f"sms.smpp {self.name}: environment variable "
                               f"{self.password_env} (the SMPP password) is not set"])
        if len(value) > 8:
            raise ConfigError([f"sms.smpp {self.name}: the password in {self.password_env} "
                               "is longer than SMPP 3.4's 8 characters"])
        return value


class ModemSettings(_Section):
    """One GSM modem on a serial port (``[[sms.modems]]``), driven in TS 27.005 PDU mode.

    Modems with the same ``pool`` share the load; routes name the pool.
    """

    name: Name
    pool: Name = "modems"
    device: Annotated[str, Field(min_length=1, max_length=255)]
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 115200
    command_timeout_s: Annotated[float, Field(ge=0.5, le=300, strict=False)] = 30.0
    smsc: Annotated[str, Field(max_length=21, pattern=r"^\+?[0-9]*$")] = ""


class SmsRouteSettings(_Section):
    """Numbers starting with ``prefix`` go to ``transports``, the first that can take them."""

    prefix: Annotated[str, Field(max_length=16, pattern=r"^\+?[0-9]*$")] = ""
    transports: Annotated[tuple[Name, ...], Field(strict=False, min_length=1)]


class SmsSettings(_Section):
    """Evacuation SMS and SMS in: SMPP binds, GSM modems, routes, limits."""

    sender_id: Annotated[str, Field(max_length=21)] = ""
    max_parts: Annotated[int, Field(ge=1, le=255)] = 6
    opt_out_override: Literal["never", "extreme"] = "extreme"
    report_inbound: bool = True
    inbound_numbers: Annotated[tuple[Annotated[str, Field(max_length=21)], ...],
                               Field(strict=False)] = ()
    default_country: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")] = "86"
    templates_file: str = "conf/sms/templates.toml"
    districts_file: str = "conf/sms/districts.geojson"
    smpp: Annotated[tuple[SmppBindSettings, ...], Field(strict=False)] = ()
    modems: Annotated[tuple[ModemSettings, ...], Field(strict=False)] = ()
    routes: Annotated[tuple[SmsRouteSettings, ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _check_names(self) -> SmsSettings:
        names = [t.name for t in self.smpp] + [m.name for m in self.modems]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"transport name {name!r} is used twice")
            seen.add(name)
        pools = {m.pool for m in self.modems}
        clash = pools & {t.name for t in self.smpp}
        if clash:
            raise ValueError(f"modem pool {sorted(clash)[0]!r} has the name of an SMPP entry")
        routable = {t.name for t in self.smpp} | pools
        for i, route in enumerate(self.routes):
            for name in route.transports:
                if name not in routable:
                    raise ValueError(f"routes[{i}] names {name!r}, which is neither an "
                                     "[[sms.smpp]] name nor a modem pool")
        return self

    @property
    def enabled(self) -> bool:
        """True when at least one transport is configured."""
        return bool(self.smpp or self.modems)
Gssi = Annotated[str, Field(min_length=1, max_length=8, pattern=r"^[0-9]+$")]


class SoundcardRadioSettings(_Section):
    """A radio on a sound card: PTT/COS lines of ``device`` and the card's audio."""

    ptt_line: Literal["rts", "dtr"] = "rts"
    cos_line: Literal["cts", "dcd", "none"] = "cts"
    cos_active_low: bool = False
    #: PortAudio device indexes (None: the system default) and the card's rate.
    audio_input: Annotated[int | None, Field(ge=0, le=1024)] = None
    audio_output: Annotated[int | None, Field(ge=0, le=1024)] = None
    audio_rate: Literal[8000, 16000, 24000, 32000, 48000] = 48000
    #: VOX (used when cos_line = "none"): RMS level that opens the squelch, and its hang.
    vox_threshold_dbfs: Annotated[float, Field(ge=-90, le=0)] = -40.0
    vox_hang_s: Annotated[float, Field(ge=0, le=10)] = 0.5


class RoipRadioSettings(_Section):
    """A RoIP box that is a SIP endpoint, held on one permanent call (see radio/roip.py)."""

    #: The device's SIP URI, or the account it registers with here (exactly one).
    uri: Annotated[str | None, Field(max_length=255,
                                     pattern=r"^sip:([^@\s<>;]+@)?[A-Za-z0-9.\-\[\]:]+$")] = None
    account: Name | None = None
    #: Our address the device reaches (bound, and put in SDP and Contact).
    local_host: str = "127.0.0.1"
    codec: Literal["PCMU", "PCMA"] = "PCMU"
    #: PTT to the device and squelch (COS) from it: "dtmf", "info" or "vox".
    ptt: Literal["dtmf", "info", "vox"] = "dtmf"
    cos: Literal["dtmf", "info", "vox"] = "vox"
    key_digits: Annotated[str, Field(pattern=r"^[0-9*#A-D]{1,16}$")] = "*"
    unkey_digits: Annotated[str, Field(pattern=r"^[0-9*#A-D]{1,16}$")] = "#"
    cos_open_digits: Annotated[str, Field(pattern=r"^[0-9*#A-D]{1,16}$")] = "A"
    cos_close_digits: Annotated[str, Field(pattern=r"^[0-9*#A-D]{1,16}$")] = "B"
    digit_timeout_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    info_content_type: Annotated[str, Field(max_length=64,
                                            pattern=r"^[a-z0-9.+-]+/[a-z0-9.+-]+$")] = \
        "application/x-ptt"
    info_key_body: Annotated[str, Field(min_length=1, max_length=128,
                                        pattern=r"^[ -~]+$")] = "PTT: on"
    info_unkey_body: Annotated[str, Field(min_length=1, max_length=128,
                                          pattern=r"^[ -~]+$")] = "PTT: off"
    info_cos_open_body: Annotated[str, Field(min_length=1, max_length=128,
                                             pattern=r"^[ -~]+$")] = "COS: on"
    info_cos_close_body: Annotated[str, Field(min_length=1, max_length=128,
                                              pattern=r"^[ -~]+$")] = "COS: off"
    vox_threshold_dbfs: Annotated[float, Field(ge=-90, le=0)] = -40.0
    vox_hang_s: Annotated[float, Field(ge=0, le=10)] = 0.5
    #: In-dialog OPTIONS this often; unanswered within request_timeout_s = the device is lost.
    keepalive_s: Annotated[float, Field(ge=0.05, le=3600)] = 10.0
    request_timeout_s: Annotated[float, Field(ge=0.05, le=64)] = 4.0
    invite_timeout_s: Annotated[float, Field(ge=0.1, le=300)] = 8.0
    #: Redial after a loss: the gateway's retry_s, doubling up to this.
    retry_max_s: Annotated[float, Field(ge=0.01, le=3600)] = 60.0

    @field_validator("local_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
        if address.is_unspecified:
            raise ValueError("local_host must be an address the device can reach")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RoipRadioSettings:
        if (self.uri is None) == (self.account is None):
            raise ValueError("a roip device needs exactly one of uri or account")
        if self.key_digits == self.unkey_digits:
            raise ValueError("key_digits and unkey_digits must differ")
        if self.cos_open_digits == self.cos_close_digits:
            raise ValueError("cos_open_digits and cos_close_digits must differ")
        if self.info_key_body == self.info_unkey_body or \
                self.info_cos_open_body == self.info_cos_close_body:
            raise ValueError("the INFO bodies for on and off must differ")
        return self


class TerminalAudioSettings(_Section):
    """The sound card wired to a TETRA terminal's or satphone's audio (radio/terminal_audio.py)."""

    audio_input: Annotated[int | None, Field(ge=0, le=1024)] = None
    audio_output: Annotated[int | None, Field(ge=0, le=1024)] = None
    audio_rate: Literal[8000, 16000, 24000, 32000, 48000] = 48000


class RadioGatewaySettings(_Section):
    """A radio gateway: a TETRA terminal's PEI or a satphone on a serial port, or a DMR master."""

    name: Name
    kind: Literal["tetra", "satphone", "dmr", "soundcard", "roip"]
    device: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    #: DMR (Homebrew protocol): the master's address, our peer id, the passphrase's file.
    host: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    port: Port = 62031
    peer_id: Annotated[int | None, Field(ge=1, le=0xFFFFFFFF)] = None
    password_file: str | None = None
    callsign: Annotated[str, Field(max_length=8, pattern=r"^[A-Za-z0-9]*$")] = "DISPATCH"
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 115200
    #: The terminal's own ISSI (TETRA) -- shown in health, never sent.
    issi: Annotated[str | None, Field(min_length=1, max_length=8, pattern=r"^[0-9]+$")] = None
    #: Extra GSSIs to attach (scan) besides those of the talkgroups on this gateway.
    groups: Annotated[tuple[Gssi, ...], Field(strict=False, max_length=32)] = ()
    #: The satphone's own number (shown in health).
    number: Annotated[str | None, Field(max_length=24, pattern=r"^\+?[0-9]+$")] = None
    retry_s: Annotated[float, Field(ge=0.01, le=3600)] = 5.0
    command_timeout_s: Annotated[float, Field(ge=0.1, le=300)] = 5.0
    hang_time_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    tx_timeout_s: Annotated[float, Field(ge=1, le=3600)] = 60.0
    max_queue: Annotated[int, Field(ge=0, le=256)] = 16
    #: ``+CTICN`` call priority at or above which a handset's call is an emergency.
    emergency_priority: Annotated[int, Field(ge=1, le=15)] = 15
    #: Satphones: how often signal and call state are polled.
    poll_s: Annotated[float, Field(ge=0.1, le=3600)] = 30.0
    #: Sound-card radios (kind = "soundcard"): see radio/soundcard.py.
    soundcard: SoundcardRadioSettings | None = None
    #: RoIP boxes that speak SIP (kind = "roip"): see radio/roip.py.
    roip: RoipRadioSettings | None = None
    #: TETRA and satphone: the terminal's audio on a sound card (see radio/terminal_audio.py).
    audio: TerminalAudioSettings | None = None
    #: Satphone docking gateway's SIP side, dialled for voice: "sip:{number}@192.0.2.10".
    sip_uri: Annotated[str | None, Field(max_length=200, pattern=r"^sips?:[^\x00-\x20]*$")] = None

    @model_validator(mode="after")
    def _kind_fits(self) -> RadioGatewaySettings:
        _terminal_audio_fits(self)
        if (self.kind == "roip") != (self.roip is not None):
            raise ValueError(f"radio gateway {self.name!r}: [radio.gateways.roip] is "
                             "needed by, and only allowed for, kind = \"roip\"")
        if self.kind == "roip":
            if self.device or self.host or self.peer_id or self.password_file or self.groups:
                raise ValueError(f"radio gateway {self.name!r}: a roip gateway is reached by "
                                 "[radio.gateways.roip] uri or account, not device/host/groups")
            return self
        if (self.kind == "soundcard") != (self.soundcard is not None):
            raise ValueError(f"radio gateway {self.name!r}: [radio.gateways.soundcard] is "
                             "needed by, and only allowed for, kind = \"soundcard\"")
        if self.kind == "satphone" and (self.groups or self.issi):
            raise ValueError(f"radio gateway {self.name!r}: groups and issi are TETRA settings, "
                             "not for a satphone")
        if self.kind == "tetra" and self.number:
            raise ValueError(f"radio gateway {self.name!r}: number is a satphone setting")
        if self.kind == "dmr":
            if self.host is None or self.peer_id is None or self.password_file is None:
                raise ValueError(f"radio gateway {self.name!r}: a dmr gateway needs host, "
                                 "peer_id and password_file")
            if self.device or self.groups or self.issi or self.number:
                raise ValueError(f"radio gateway {self.name!r}: device, groups, issi and "
                                 "number are not dmr settings")
        elif self.device is None:
            raise ValueError(f"radio gateway {self.name!r}: a {self.kind} gateway needs device")
        elif self.host is not None or self.peer_id is not None or self.password_file:
            raise ValueError(f"radio gateway {self.name!r}: host, peer_id and password_file "
                             "are dmr settings")
        return self

    def passphrase(self) -> bytes:
        """The DMR master's passphrase, read from ``password_file`` (first line)."""
        if self.password_file is None:
            return b""
        return Path(self.password_file).read_bytes().splitlines()[0].strip() if Path(
            self.password_file).stat().st_size else b""


def _terminal_audio_fits(gw: RadioGatewaySettings) -> None:
    """``audio`` is for tetra and satphone gateways, ``sip_uri`` for satphones, not both."""
    if gw.audio is not None and gw.kind not in ("tetra", "satphone"):
        raise ValueError(f"radio gateway {gw.name!r}: [radio.gateways.audio] is for tetra and "
                         "satphone gateways (a soundcard gateway has [radio.gateways.soundcard])")
    if gw.sip_uri is None:
        return
    if gw.kind != "satphone":
        raise ValueError(f"radio gateway {gw.name!r}: sip_uri is a satphone setting")
    if gw.audio is not None:
        raise ValueError(f"radio gateway {gw.name!r}: give audio or sip_uri, not both")
    if gw.sip_uri.count("{number}") != 1 or "@" not in gw.sip_uri \
            or gw.sip_uri.replace("{number}", "", 1).count("{") \
            or gw.sip_uri.replace("{number}", "", 1).count("}"):
        raise ValueError(f"radio gateway {gw.name!r}: sip_uri must hold {{number}} once, "
                         f"as in sip:{{number}}@192.0.2.10, not {gw.sip_uri!r}")


class TalkgroupSettings(_Section):
    """A talkgroup dispatchers key: its GSSI on one TETRA gateway and who may press PTT."""

    name: Name
    gssi: Gssi
    gateway: Name
    agency: Annotated[str, Field(max_length=64)] = ""
    #: The lowest priority that may key the group: field_unit, dispatcher or commander.
    min_priority: Literal["field_unit", "dispatcher", "commander"] = "dispatcher"


class DmrBridgeMemberSettings(_Section):
    """One side of a DMR bridge: a configured DMR talkgroup, optionally one timeslot."""

    talkgroup: Name
    #: 1 or 2 to bridge only that timeslot (and transmit on it); 0: either, kept as heard.
    slot: Annotated[int, Field(ge=0, le=2)] = 0


class DmrBridgeSettings(_Section):
    """Talkgroups on DMR gateways whose calls are forwarded to each other (AMBE untouched)."""

    name: Name
    members: Annotated[tuple[DmrBridgeMemberSettings, ...],
                       Field(strict=False, min_length=2, max_length=16)]
    #: Silence (seconds) after which a stream stops holding the bridge.
    hold_s: Annotated[float, Field(gt=0, le=30, strict=False)] = 1.5


class RadioSettings(_Section):
    """Radio and satphone gateways and the talkgroups carried over them."""

    gateways: Annotated[tuple[RadioGatewaySettings, ...], Field(strict=False)] = ()
    talkgroups: Annotated[tuple[TalkgroupSettings, ...], Field(strict=False)] = ()
    dmr_bridges: Annotated[tuple[DmrBridgeSettings, ...],
                           Field(strict=False, max_length=64)] = ()
    #: A unit's last position is attached to its SDS reports for this long (seconds).
    position_max_age_s: Annotated[float, Field(ge=0, le=86400)] = 600.0

    @model_validator(mode="after")
    def _consistent(self) -> RadioSettings:
        kinds: dict[str, str] = {}
        for gw in self.gateways:
            if gw.name in kinds:
                raise ValueError(f"radio.gateways: name {gw.name!r} is used twice")
            kinds[gw.name] = gw.kind
        names: set[str] = set()
        soundcards: set[str] = set()
        gssis: set[tuple[str, str]] = set()
        for tg in self.talkgroups:
            if tg.name in names:
                raise ValueError(f"radio.talkgroups: name {tg.name!r} is used twice")
            if kinds.get(tg.gateway) not in ("tetra", "dmr", "soundcard", "roip"):
                raise ValueError(f"radio.talkgroups: {tg.name!r} names gateway {tg.gateway!r}, "
                                 "which is not a configured tetra, dmr, soundcard or roip "
                                 "gateway")
            if kinds[tg.gateway] in ("soundcard", "roip") and tg.gateway in soundcards:
                raise ValueError(f"radio.talkgroups: {kinds[tg.gateway]} gateway "
                                 f"{tg.gateway!r} carries one talkgroup only")
            if kinds[tg.gateway] in ("soundcard", "roip"):
                soundcards.add(tg.gateway)
            if (tg.gateway, tg.gssi) in gssis:
                raise ValueError(f"radio.talkgroups: GSSI {tg.gssi} is configured twice on "
                                 f"gateway {tg.gateway!r}")
            names.add(tg.name)
            gssis.add((tg.gateway, tg.gssi))
        for gw in self.gateways:
            if gw.kind == "tetra" and not gw.groups and not any(
                    tg.gateway == gw.name for tg in self.talkgroups):
                raise ValueError(f"radio.gateways: tetra gateway {gw.name!r} carries no "
                                 "talkgroup (add a [[radio.talkgroups]] or groups = [...])")
        on_gateway = {tg.name: tg.gateway for tg in self.talkgroups}
        bridges: set[str] = set()
        for bridge in self.dmr_bridges:
            if bridge.name in bridges:
                raise ValueError(f"radio.dmr_bridges: name {bridge.name!r} is used twice")
            bridges.add(bridge.name)
            seen: set[tuple[str, int]] = set()
            for m in bridge.members:
                if kinds.get(on_gateway.get(m.talkgroup, "")) != "dmr":
                    raise ValueError(f"radio.dmr_bridges: {bridge.name!r} names talkgroup "
                                     f"{m.talkgroup!r}, which is not a talkgroup on a dmr "
                                     "gateway")
                if (m.talkgroup, m.slot) in seen:
                    raise ValueError(f"radio.dmr_bridges: {bridge.name!r} lists "
                                     f"{m.talkgroup!r} twice")
                seen.add((m.talkgroup, m.slot))
        return self


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


class SipOverloadSettings(_Section):
    """Overload control (telephony/b2bua/overload.py): shed new calls with 503 + Retry-After."""

    #: Event-loop lag at which calls below keep_priority get 503 (0 = never).
    lag_ms: Annotated[int, Field(ge=0, le=60_000)] = 300
    #: Lag at which every new call gets 503, 110/119/120 too, so the carrier's overflow
    #: routing takes them to the backup centre (0 = never shed emergency calls).
    all_lag_ms: Annotated[int, Field(ge=0, le=60_000)] = 2000
    #: Calls at or above this priority (110/119/120 = 30) are kept while lag < all_lag_ms.
    keep_priority: Annotated[int, Field(ge=0, le=1000)] = 30
    #: Shedding stays on this long after the last late sample.
    hold_s: Annotated[float, Field(ge=0.1, le=600)] = 2.0
    #: Retry-After (seconds) on the 503.
    retry_after_s: Annotated[int, Field(ge=0, le=3600)] = 5

    @model_validator(mode="after")
    def _order(self) -> SipOverloadSettings:
        if self.lag_ms and self.all_lag_ms and self.all_lag_ms < self.lag_ms:
            raise ValueError("all_lag_ms must be at least lag_ms (or 0)")
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
    min_se: Annotated[int, Field(ge=1, le=86400)] = 90
    transfer_ring_timeout: Annotated[int, Field(ge=1, le=600)] = 45
    ringback_180: bool = True
    agent_login_on_register: bool = False
    user_agent: Annotated[str, Field(min_length=1, max_length=64)] = "dispatchd"
    registrar: SipRegistrarSettings = SipRegistrarSettings()
    overload: SipOverloadSettings = SipOverloadSettings()
    #: Call events wait up to this long in memory to share one commit (group commit). A crash
    #: (SIGKILL, power) can lose this window's events; SIGTERM loses none. Lower = less at
    #: risk, more CPU per call (200 ms: ~6 ms/call at 60 calls/s; 20 ms: ~9 ms).
    records_linger_ms: Annotated[int, Field(ge=0, le=2000)] = 200
    # SIP proxies (Kamailio) whose X-Dispatchd-Source header names a request's real source.
    proxies: Annotated[tuple[str, ...], Field(strict=False, max_length=64)] = ()

    @field_validator("proxies")
    @classmethod
    def _check_proxies(cls, proxies: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or network") from None
        return proxies

    @model_validator(mode="after")
    def _check_tls(self) -> SipSettings:
        wants_tls = any(listen.transport == "tls" for listen in self.listen)
        if wants_tls and not (self.tls_cert and self.tls_key):
            raise ValueError("a tls listener needs tls_cert and tls_key")
        return self


_Tables = Annotated[tuple[dict[str, Any], ...], Field(strict=False)]


class ClusterSettings(_Section):
    """Several nodes sharing one PostgreSQL behind Kamailio (see dispatch/cluster.py)."""

    enabled: bool = False
    node_id: Name | None = None  # default: node.name; unique in the cluster
    # How other nodes reach this one's HTTP API (supervisor commands are forwarded there).
    advertise_url: Annotated[str, Field(max_length=200, pattern=r"^https?://[^\s]+$")] | None = None
    channel: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "dispatchd_events"
    heartbeat_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    dead_after_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    batch_ms: Annotated[int, Field(ge=0, le=1000)] = 20

    @model_validator(mode="after")
    def _dead_after(self) -> ClusterSettings:
        if self.dead_after_s < 3 * self.heartbeat_s:
            raise ValueError("dead_after_s must be at least 3 x heartbeat_s")
        return self


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
    console: ConsoleSettings = ConsoleSettings()
    dispatch: DispatchSettings = DispatchSettings()
    sms: SmsSettings = SmsSettings()
    media: MediaSettings = MediaSettings()
    # TOML arrays are lists; accept them (non-strict) into an immutable tuple.
    devices: Annotated[tuple[DeviceSettings, ...], Field(strict=False)] = ()
    radio: RadioSettings = RadioSettings()
    sip: SipSettings = SipSettings()
    cluster: ClusterSettings = ClusterSettings()
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
    def _cluster_needs_postgresql(self) -> Settings:
        url = os.environ.get(DATABASE_URL_ENV) or self.database.url or "sqlite:"
        if self.cluster.enabled and not url.startswith("postgres"):
            raise ValueError("cluster.enabled: a cluster shares one PostgreSQL; "
                             "set database.url = \"postgresql://...\"")
        return self

    @model_validator(mode="after")
    def _check_event_loop(self) -> Settings:
        from dispatch.runtime import check_event_loop

        check_event_loop(self.node.event_loop,
                         any(x.transport == "tls" for x in self.sip.listen) and self.sip.enabled)
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
    if kind == "value_error" and isinstance(error["input"], dict):
        return f"{where}{message}"  # a whole table's check: its contents would drown the line
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
