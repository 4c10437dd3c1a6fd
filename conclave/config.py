"""The data directory's configuration file, ``conclave.toml``.

Each ``[section]`` is a frozen pydantic model; unknown keys are errors so
typos are caught. Durations ("90s", "5m", "7d", "1h30m") become seconds and
sizes ("64KiB") become bytes. Every error names the exact key path::

    DATA/conclave.toml: transports.tls_port: must be 1-65535

Use :func:`load_config` at start-up and :func:`write_default_config` from
``conclave init``. Paths in the file are relative to the data directory.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from conclave.sip.limits import MAX_MESSAGE_SIZE, MIN_MESSAGE_SIZE_SETTING

from .config_fields import (
    Bool,
    Duration,
    Int,
    Number,
    Port,
    RelPath,
    Size,
    Str,
    _endpoint,
    _host,
    _host_name,
    _host_or_empty,
    _host_port,
    _ip,
    _not_empty,
    _Section,
    _within,
    format_size,
    parse_duration,
    parse_size,
)  # fmt: skip
from .config_perimeter import (
    DirectorSection,
    EdgeSection,
    FederationSection,
    PairingSection,
    PoolSection,
    TrustSection,
)  # fmt: skip

CONFIG_FILENAME = "conclave.toml"
PID_FILE = "conclave.pid"
"""In the data directory while a server (or the supervisor of its workers) runs: its pid,
which `conclave user add`, `certs reload` and `lockout reset` signal."""
TRANSPORT_NAMES = ("tls", "tcp", "udp", "ws")


class ConfigError(Exception):
    """The configuration is missing, unreadable or invalid.

    ``problems`` lists each fault as ``"dotted.key.path: what is wrong"``;
    the message prefixes them with the file name, one per line.
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


# --- human-readable durations and sizes -----------------------------------------------


class ServerSection(_Section):
    """Identity of this deployment."""

    domain: Annotated[Str, AfterValidator(_host_name)]
    """SIP domain served (user@domain); also the digest realm"""
    host: Annotated[Str, AfterValidator(_host)]
    """FQDN or IP address of this server, named by its TLS certificate"""


class TransportsSection(_Section):
    """Listening sockets. Only SIP over TLS is on by default."""

    tls: Bool = True
    """SIP over TLS (RFC 3261 §26.2)"""
    tcp: Bool = False
    """plain SIP over TCP: unencrypted, off by default"""
    udp: Bool = False
    """plain SIP over UDP: unencrypted, off by default"""
    ws: Bool = False
    """SIP over WebSocket (RFC 7118) at wss://HOST:PORT/sip on the web listener ([web])"""
    bind: Annotated[Str, AfterValidator(_ip)] = "0.0.0.0"
    """address to listen on (0.0.0.0 or :: for all)"""
    tls_port: Port = 5061
    """port for SIP over TLS"""
    sip_port: Port = 5060
    """port for plain SIP (TCP and UDP)"""

    @field_validator("sip_port")
    @classmethod
    def _distinct_ports(cls, value: int, info: ValidationInfo) -> int:
        data = info.data
        if data.get("tls") and data.get("tcp") and value == data.get("tls_port") and value:
            raise ValueError("must differ from tls_port when both tls and tcp are on")
        return value

    @model_validator(mode="after")
    def _some_transport(self) -> TransportsSection:
        if not (self.tls or self.tcp or self.udp or self.ws):
            raise ValueError("enable at least one transport")
        return self

    def enabled(self) -> list[tuple[str, int]]:
        """``(transport, port)`` of every SIP listener to open, in the order tls, tcp, udp.

        TLS listens on ``tls_port``, plain TCP and UDP on ``sip_port``. The one
        answer to "what listens": the server opens these and the audit expects
        them. SIP over WebSocket (``ws``) is served on the web listener (``[web]``),
        not on a SIP listener of its own, so it adds nothing here.
        """
        wanted = [
            ("tls", self.tls, self.tls_port),
            ("tcp", self.tcp, self.sip_port),
            ("udp", self.udp, self.sip_port),
        ]
        return [(name, port) for name, on, port in wanted if on]


class TlsSection(_Section):
    """Certificate files, relative to the data directory."""

    cert: RelPath = "tls/server.crt"
    """server certificate, leaf then chain"""
    key: RelPath = "tls/server.key"
    """server private key (mode 0600)"""
    ca: RelPath = "ca/ca.crt"
    """internal CA certificate that clients trust"""
    crl: RelPath = "ca/crl.pem"
    """revocation list the internal CA publishes (conclave certs revoke)"""
    client_auth: Literal["off", "optional"] = "off"
    """optional: users may sign in with a client certificate from the internal CA"""
    reload_poll: Annotated[Duration, _within(parse_duration, "100ms", "1h")] = 5
    """how often certificate files are checked for changes, expiry and renewal"""
    warn_before: Duration = 30 * 86400
    """log a warning when the server certificate expires within this"""
    renew_before: Duration = 30 * 86400
    """renew an internal certificate automatically this long before it expires"""
    auto_renew: Bool = True
    """renew internal certificates unattended (needs a CA key without passphrase)"""


class _ExpiryRange(_Section):
    """A section with ``min_expires <= default_expires <= max_expires``."""

    @field_validator("default_expires", check_fields=False)
    @classmethod
    def _default_after_min(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("min_expires", 0):
            raise ValueError("must be at least min_expires")
        return value

    @field_validator("max_expires", check_fields=False)
    @classmethod
    def _max_after_default(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("default_expires", 0):
            raise ValueError("must be at least default_expires")
        return value


class RegistrarSection(_ExpiryRange):
    """Registration lifetimes in seconds (RFC 3261 §10.2.1.1) and binding limits."""

    min_expires: Annotated[Int, _within(int, 1)] = 60
    """shorter requests get 423 Interval Too Brief"""
    default_expires: Int = 3600
    """used when the client asks for none"""
    max_expires: Annotated[Int, _within(int, high=2**32 - 1)] = 86400
    """longer requests are shortened"""
    max_contacts_per_aor: Annotated[Int, _within(int, 1)] = 10
    """bindings allowed per user"""


class ImSection(_Section):
    """Instant messaging."""

    offline_max_per_user: Annotated[Int, _within(int, 0)] = 100
    """messages held per offline user (0: none held)"""
    offline_max_age: Duration = 7 * 86400
    """held messages older than this are dropped"""


class PresenceSection(_ExpiryRange):
    """Presence and contact lists (SIMPLE: PUBLISH, SUBSCRIBE/NOTIFY, resource lists)."""

    enabled: Bool = True
    """serve presence (PUBLISH, SUBSCRIBE for presence and presence.winfo)"""
    min_expires: Annotated[Int, _within(int, 1)] = 60
    """shortest publication or subscription; shorter requests get 423"""
    default_expires: Int = 3600
    """used when a PUBLISH or SUBSCRIBE asks for none"""
    max_expires: Annotated[Int, _within(int, high=2**32 - 1)] = 7200
    """longer requests are shortened"""
    publish_rate: Number = 1.0
    """state-changing PUBLISHes per second each user may sustain (503 beyond)"""
    publish_burst: Annotated[Int, _within(int, 1)] = 10
    """PUBLISHes a user may send at once above the rate"""
    notify_merge_window: Annotated[Duration, _within(parse_duration, high="10s")] = 0.2
    """changes reaching one watcher within this window go out as one NOTIFY (0s-10s)"""
    external_watchers: Literal["pending", "allow"] = "pending"
    """watchers from other domains: pending until allowed, or allow (External level)"""


class LimitsSection(_Section):
    """Per-source protection against floods and password guessing."""

    requests_per_second: Number = 20.0
    """sustained requests per source address"""
    burst: Annotated[Int, _within(int, 1)] = 50
    """requests a source may send at once above the rate"""
    ban_seconds: Duration = 600
    """how long an abusive source is refused the first time"""
    max_ban_seconds: Duration = 86_400
    """a source banned again within a day of its last ban is banned twice as long, up to this"""
    auth_failures_per_minute: Annotated[Int, _within(int, 1)] = 10
    """failed authentications per source before a ban"""
    # Bounded by the SIP core's own limits (conclave.sip.limits), which also
    # say why: the parser refuses more whatever is configured here.
    max_message_size: Annotated[
        Size,
        _within(parse_size, format_size(MIN_MESSAGE_SIZE_SETTING), format_size(MAX_MESSAGE_SIZE)),
    ] = MAX_MESSAGE_SIZE
    """largest SIP message with its body (1KiB-64KiB): more closes a stream, drops a datagram"""

    @model_validator(mode="after")
    def _ban_lengths(self) -> LimitsSection:
        if self.max_ban_seconds < self.ban_seconds:
            raise ValueError(
                f"max_ban_seconds ({self.max_ban_seconds:g}s) must be at least "
                f"ban_seconds ({self.ban_seconds:g}s): escalation only lengthens bans"
            )
        return self


class LockoutSection(_Section):
    """Account lockout, split by familiar and unfamiliar sources (docs/security.md)."""

    threshold: Annotated[Int, _within(int, 1, 1000)] = 5
    """failed sign-ins of one kind (familiar or unfamiliar) that lock that kind of access"""
    window: Annotated[Duration, _within(parse_duration, "1s", "1d")] = 600
    """failures count toward the threshold within this long of the first one"""
    duration: Annotated[Duration, _within(parse_duration, "1s", "1d")] = 600
    """how long a kind of access to the account stays locked"""
    familiar_days: Annotated[Int, _within(int, 1, 365)] = 30
    """an address that signed in as the account stays familiar this many days"""
    internal_networks: tuple[Str, ...] = ()
    """networks whose addresses are always familiar (the offices), such as 10.0.0.0/8"""
    directory_threshold: Annotated[Int, _within(int, 0)] = 0
    """the user directory's own lockout threshold (0: none); threshold must be below it"""

    @field_validator("internal_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for text in value:
            try:
                out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{text!r} is not an IP network (e.g. 10.0.0.0/8)") from None
        return tuple(out)

    @model_validator(mode="after")
    def _below_directory(self) -> LockoutSection:
        if self.directory_threshold and self.threshold >= self.directory_threshold:
            raise ValueError(
                f"threshold {self.threshold} must be below directory_threshold "
                f"{self.directory_threshold}: the directory would lock accounts first"
            )
        return self


class AuthSection(_Section):
    """SIP digest authentication (RFC 8760, RFC 7616)."""

    nonce_lifetime: Annotated[Duration, _within(parse_duration, "1s")] = 300
    """after this a nonce is stale"""
    algorithms: tuple[Literal["SHA-256", "MD5"], ...] = ("SHA-256", "MD5")
    """challenges offered, preferred first"""
    md5_only_user_agents: tuple[Str, ...] = ("baresip v0.", "baresip v1.", "sipsak")
    """User-Agent prefixes of clients that fail on any non-MD5 challenge: offered MD5 alone"""

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one algorithm")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat an algorithm")
        return value


LOG_BUFFER_DEFAULT = 64 * 1024**2
"""Disk an agent may fill with events while its controller is unreachable: at a
few hundred octets an event, hundreds of thousands of events, hours of
AlwaysOn logging from a busy server."""
LOG_BUFFER_LIMITS = ("1MiB", "4GiB")
"""Smallest and largest ``[logging] buffer_max`` accepted."""


class LoggingSection(_Section):
    """Logging: JSON lines on stderr, and the agent that forwards events to a controller."""

    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
    ] = "info"
    """debug, info, warning or error"""
    controller: Annotated[Str, AfterValidator(_endpoint)] = ""
    """host:port of the logging controller or a syslog server (RFC 5425 over TLS); empty: none"""
    controller_name: Annotated[Str, AfterValidator(_host_or_empty)] = ""
    """name the controller's certificate must carry; empty: the host in controller"""
    controller_ca: RelPath = "ca/ca.crt"
    """CA certificate the controller's certificate must chain to"""
    controller_acks: Bool = True
    """the controller confirms what it stored (a Conclave controller does; rsyslog: false)"""
    buffer_max: Annotated[Size, _within(parse_size, *LOG_BUFFER_LIMITS)] = LOG_BUFFER_DEFAULT
    """disk held for events while the controller is unreachable (1MiB-4GiB)"""


class LoggingControllerSection(_Section):
    """The logging-controller role: stores the events agents send (syslog over TLS)."""

    listen: Annotated[Str, AfterValidator(_host_port)] = "127.0.0.1:6514"
    """host:port for agents (RFC 5425's port 6514); port 0 picks a free port"""
    store: RelPath = "logs/events.db"
    """SQLite file holding the events, relative to the data directory"""
    retention: Annotated[Duration, _within(parse_duration, "1h")] = 30 * 86400
    """events older than this are deleted"""
    cert: Str = ""
    """certificate presented to agents; empty: the [tls] certificate"""
    key: Str = ""
    """its private key; empty: the [tls] key"""
    client_cas: tuple[RelPath, ...] = ("ca/ca.crt",)
    """CAs whose servers may send events (mutual TLS): add another deployment's CA here"""

    @field_validator("client_cas")
    @classmethod
    def _some_ca(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one CA certificate")
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> LoggingControllerSection:
        if bool(self.cert.strip()) != bool(self.key.strip()):
            raise ValueError("cert and key must be given together (or both left empty)")
        return self


class AdminSection(_Section):
    """The admin HTTP interface: off by default, loopback only when on."""

    enabled: Bool = False
    """serve the admin interface"""
    bind: Annotated[Str, AfterValidator(_host_port)] = "127.0.0.1:0"
    """host:port to listen on; port 0 picks a free port"""
    console: Bool = False
    """serve the admin console and API too, over HTTPS (server certificate; needs tls)"""
    admins: tuple[Str, ...] = ()
    """users who may sign in to the console and admin API"""
    topology: Str = ""
    """the deployment's topology document, for the console (set by serve --topology)"""


class WebSection(_Section):
    """The web face; off by default. On: an HTTPS listener, and the CA's CRL over plain HTTP."""

    enabled: Bool = False
    """open the HTTPS listener (bind) and publish the CRL at http://HOST:PORT/pki/ca.crl"""
    bind: Annotated[Str, AfterValidator(_host_port)] = "0.0.0.0:443"
    """host:port of the HTTPS listener (the server's certificate; needs [transports] tls)"""
    crl_bind: Annotated[Str, AfterValidator(_host_port)] = "0.0.0.0:80"
    """host:port of the plain-HTTP publication point; port 0 picks a free port"""
    origins: tuple[Str, ...] = ()
    """other https://NAME[:PORT] pages allowed to open SIP WebSockets (host and domain are)"""
    crl_url: Str = ""
    """URL certificates name as their CRL distribution point; empty: http://HOST:PORT/pki/ca.crl"""

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            scheme, sep, rest = origin.partition("://")
            if scheme != "https" or not sep or not rest or "/" in rest.rstrip("/"):
                raise ValueError(f"{origin!r} is not a web origin (https://NAME[:PORT])")
        return value


class DatabaseSection(_Section):
    """Back-end database."""

    url: Annotated[Str, AfterValidator(_not_empty)] = "sqlite:///conclave.db"
    """sqlite:///FILE (relative to the data directory) or postgresql://..."""


class ArchiveSection(_Section):
    """Archiving of instant messages (compliance); see docs/archiving.md."""

    enabled: Bool = False
    """run the archiving agent; off: nothing is archived, whatever the policies say"""
    internal: Bool = True
    """global policy: archive conversations among users of this deployment"""
    federated: Bool = True
    """global policy: archive conversations with users of federated domains"""
    critical: Bool = True
    """refuse a message (503) that must be archived but cannot be; off: deliver it anyway"""
    directory: RelPath = "archive"
    """where the hash-chained segment files live (relative to the data directory)"""
    site: Annotated[Str, AfterValidator(_not_empty)] = "default"
    """this server's site, for site-level policies (the topology will supply it)"""
    pool: Annotated[Str, AfterValidator(_not_empty)] = "default"
    """this server's pool, for pool-level policies (the topology will supply it)"""
    retention: Duration = 0
    """purge records older than this (0s: keep for ever)"""
    segment_size: Annotated[Size, _within(parse_size, "1MiB", "1GiB")] = 64 * 1024 * 1024
    """start a new segment file beyond this size (1MiB-1GiB)"""
    write_timeout: Annotated[Duration, _within(parse_duration, "100ms", "60s")] = 5
    """longest a message waits for its archive write before it is refused (100ms-60s)"""


class MediaRelaySection(_Section):
    """Credentials for a TURN media relay (coturn with use-auth-secret), for signed-in users."""

    enabled: Bool = False
    """answer SERVICE requests for media relay credentials (docs/media-relay.md)"""
    secret_file: RelPath = "relay.secret"
    """the secret shared with the relay (coturn's static-auth-secret); made if missing"""
    servers: tuple[Str, ...] = ()
    """the relays users are given, as host:port (UDP and TCP)"""
    lifetime: Annotated[Duration, _within(parse_duration, "1m", "1d")] = 8 * 3600
    """how long issued credentials work (a client may ask for less)"""

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_endpoint(v) for v in value)


class CdrSection(_Section):
    """Call detail records: registrations, IM and calls (conclave cdr ...)."""

    enabled: Bool = True
    """record CDRs in the database"""
    registrations: Bool = True
    """also record one CDR per REGISTER outcome"""
    retention: Annotated[Duration, _within(parse_duration, "1h")] = 60 * 86400
    """CDRs older than this are purged"""
    flush_interval: Annotated[Duration, _within(parse_duration, "10ms", "60s")] = 1
    """CDRs are written in batches at least this often (the loss window on a crash)"""
    max_queue: Annotated[Int, _within(int, 100)] = 100_000
    """CDRs held in memory awaiting the database; beyond this they are dropped and counted"""


class Config(_Section):
    """The whole of conclave.toml."""

    server: ServerSection
    transports: TransportsSection = TransportsSection()
    tls: TlsSection = TlsSection()
    registrar: RegistrarSection = RegistrarSection()
    im: ImSection = ImSection()
    presence: PresenceSection = PresenceSection()
    limits: LimitsSection = LimitsSection()
    lockout: LockoutSection = LockoutSection()
    auth: AuthSection = AuthSection()
    logging: LoggingSection = LoggingSection()
    logging_controller: LoggingControllerSection = LoggingControllerSection()
    admin: AdminSection = AdminSection()
    web: WebSection = WebSection()
    database: DatabaseSection = DatabaseSection()
    archive: ArchiveSection = ArchiveSection()
    cdr: CdrSection = CdrSection()
    media_relay: MediaRelaySection = MediaRelaySection()
    edge: EdgeSection = EdgeSection()
    trust: TrustSection = TrustSection()
    federation: FederationSection = FederationSection()
    director: DirectorSection = DirectorSection()
    pool: PoolSection = PoolSection()
    pairing: PairingSection = PairingSection()

    @model_validator(mode="after")
    def _web_needs_tls(self) -> Config:
        if self.web.enabled and not self.transports.tls:
            raise ValueError(
                "[web] enabled needs [transports] tls = true: the HTTPS listener "
                "serves the server's TLS certificate"
            )
        if self.transports.ws and not self.web.enabled:
            raise ValueError(
                "[transports] ws needs [web] enabled = true: SIP over WebSocket is "
                "served on the web listener"
            )
        if self.admin.console and not (self.admin.enabled and self.transports.tls):
            raise ValueError(
                "[admin] console needs [admin] enabled = true and [transports] tls = true: "
                "the console is served over HTTPS with the server's certificate"
            )
        return self

    def path(self, data_dir: Path, relative: str) -> Path:
        """Resolve a path from the file (e.g. ``config.tls.cert``) against the data directory."""
        candidate = Path(relative).expanduser()
        return candidate if candidate.is_absolute() else Path(data_dir) / candidate

    def database_url(self, data_dir: Path) -> str:
        """The database URL with a relative SQLite file placed in the data directory."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            name = url[len(prefix) :]
            if name and name != ":memory:":
                return prefix + str(Path(data_dir).resolve() / name)
        return url


# --- loading -------------------------------------------------------------------------

_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "too_short": "must not be empty",
}


def error_message(error: Mapping[str, Any]) -> str:
    """A readable message for one pydantic validation error (without its path).

    Shared by every document Conclave validates with pydantic (this config,
    the topology), so their errors read the same way.
    """
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    return _MESSAGES.get(kind, str(error["msg"]))


def _problem(error: Mapping[str, Any]) -> str:
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{path or '(top level)'}: {error_message(error)}"


def config_from_mapping(data: Mapping[str, Any], *, source: str = CONFIG_FILENAME) -> Config:
    """Validate already-parsed TOML; :class:`ConfigError` names every bad key path."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems), problems) from None


def loads_config(text: str, *, source: str = CONFIG_FILENAME) -> Config:
    """Parse and validate TOML text (``source`` names it in error messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}", [f"invalid TOML: {exc}"]) from None
    return config_from_mapping(data, source=source)


def load_config(data_dir: Path) -> Config:
    """Read ``DATA/conclave.toml``; raise :class:`ConfigError` if missing or invalid."""
    path = Path(data_dir) / CONFIG_FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run conclave init first)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return loads_config(text, source=str(path))


# --- writing -------------------------------------------------------------------------

_TOML_ESCAPES = {i: f"\\u{i:04X}" for i in (*range(0x20), 0x7F)}
_TOML_ESCAPES |= {ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t"}


def _toml_string(value: str) -> str:
    return '"' + value.translate(_TOML_ESCAPES) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # finite: the models refuse inf and nan
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (an Edge's partners)
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dumps_config(config: Config) -> str:
    """Render ``config`` as commented TOML that :func:`loads_config` reads back equal."""
    data = config.model_dump(mode="python")
    lines = ["# Conclave configuration. Durations: 90s, 5m, 7d. Sizes: 64KiB, 1MiB."]
    for section_name, section_model in type(config).model_fields.items():
        section_type = section_model.annotation
        assert isinstance(section_type, type) and issubclass(section_type, BaseModel)
        lines.append("")
        doc = (section_type.__doc__ or "").strip().splitlines()
        if doc:
            lines.append(f"# {doc[0]}")
        lines.append(f"[{section_name}]")  # field names are bare keys
        for key, value in data[section_name].items():
            description = section_type.model_fields[key].description
            if description:
                lines.append(f"# {description}")
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_config(data_dir: Path, config: Config, *, overwrite: bool = True) -> Path:
    """Write ``config`` to ``DATA/conclave.toml`` atomically; returns the path."""
    path = Path(data_dir) / CONFIG_FILENAME
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: already exists (refusing to overwrite it)")
    tmp = path.with_name(f".{CONFIG_FILENAME}.{os.getpid()}.tmp")
    try:
        # 0600 from the first byte: it names every file and may hold a database password.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(dumps_config(config))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path


def write_default_config(
    data_dir: Path,
    *,
    domain: str,
    host: str,
    transports: Iterable[str] = ("tls",),
    tls_port: int = 5061,
    sip_port: int = 5060,
    bind: str | None = None,
    overwrite: bool = False,
) -> Config:
    """Create ``DATA/conclave.toml`` for ``conclave init`` and return what it holds.

    ``transports`` names the enabled ones (tls, tcp, udp, ws); all else takes
    secure defaults. Refuses to replace an existing file unless ``overwrite``.
    """
    enabled = {t.strip().lower() for t in transports if t.strip()}
    unknown = sorted(enabled - set(TRANSPORT_NAMES))
    if unknown:
        problem = f"transports: unknown transport {unknown[0]!r} (use {', '.join(TRANSPORT_NAMES)})"
        raise ConfigError(problem, [problem])
    section: dict[str, Any] = {name: name in enabled for name in TRANSPORT_NAMES}
    section |= {"tls_port": tls_port, "sip_port": sip_port}
    if bind is not None:
        section["bind"] = bind
    config = config_from_mapping(
        {"server": {"domain": domain, "host": host}, "transports": section}, source="init"
    )
    write_config(data_dir, config, overwrite=overwrite)
    return config
