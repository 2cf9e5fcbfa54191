"""One typed settings object: TOML file < ``BOUNCEGW_*`` environment < command-line flags.

Every key lives in a section (``[listener]``, ``[next_hop]``, ...). The
environment overrides a key as ``BOUNCEGW_<SECTION>__<KEY>`` (double underscore
between section and key, as in ``BOUNCEGW_NEXT_HOP__ADDRESS``). Validation runs
once, at start, and its error names the bad key and where it came from.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "BOUNCEGW_"
MIB = 1024 * 1024


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and its source."""


#: A host name (RFC 1123 section 2.1: letters, digits, hyphens, dot-separated labels) or an IPv4
#: address; IPv6 addresses come in brackets and are checked by ``ipaddress``.
_HOST_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)


def parse_host_port(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) and check both parts."""
    if "://" in value:
        # A URL scheme would otherwise pass as part of the host and fail only when connecting.
        raise ValueError(
            f"expected HOST:PORT without a scheme, got {value!r} (write {value.split('://', 1)[1]!r})"
        )
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address in brackets: {value!r}") from None
    elif not _HOST_RE.fullmatch(host):
        raise ValueError(f"expected HOST:PORT, got {value!r} ({host!r} is not a host name or address)")
    return host, port


def _check_host_port(value: str) -> str:
    parse_host_port(value)
    return value


HostPort = Annotated[str, AfterValidator(_check_host_port)]

#: Networks with a shorter prefix than this admit a large part of the Internet: listed without
#: AUTH on a reachable address, they make an open relay. (Private ranges such as 10.0.0.0/8 and
#: provider ranges such as Exchange Online's /14 stay below it.)
BROAD_PREFIX = {4: 8, 6: 16}


def is_loopback_host(host: str) -> bool:
    """True for a loopback literal or ``localhost``; any other name may be reachable."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


#: Private IPv6 ranges wider than BROAD_PREFIX (unique local and link-local addresses).
WIDE_PRIVATE = (ipaddress.IPv6Network("fc00::/7"), ipaddress.IPv6Network("fe80::/10"))


def broad_networks(networks: list[str]) -> list[str]:
    """The entries of ``networks`` broader than :data:`BROAD_PREFIX` that are not private."""
    broad = []
    for net in networks:
        network = ipaddress.ip_network(net, strict=False)
        if network.prefixlen >= BROAD_PREFIX[network.version]:
            continue
        if isinstance(network, ipaddress.IPv6Network) and any(map(network.subnet_of, WIDE_PRIVATE)):
            continue
        broad.append(net)
    return broad


def _check_user_name(name: str) -> str:
    # AUTH PLAIN/LOGIN carry any UTF-8 name (RFC 4616 section 2); a name that cannot be typed
    # or logged unambiguously is a configuration mistake.
    if not name or not name.isprintable() or any(ch.isspace() for ch in name) or len(name) > 255:
        raise ValueError(f"user name {name[:40]!r} must be 1-255 printable characters without spaces")
    return name


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenerSettings(_Section):
    """The SMTP listener that the upstream MTA talks to."""

    listen: HostPort = "127.0.0.1:10025"
    #: Name in the greeting and EHLO reply. Given explicitly so no connection
    #: triggers a blocking reverse lookup.
    hostname: str = Field(default_factory=platform.node)
    #: Clients outside these networks get "554 5.7.1" and are disconnected.
    allowed_networks: list[str] = ["127.0.0.0/8", "::1/128"]
    max_sessions: int = Field(default=200, ge=1)
    #: RFC 5321 section 4.5.3.1.8 asks for at least 100.
    max_recipients: int = Field(default=1000, ge=1)
    #: Advertised as SIZE; larger messages get "552 5.3.4".
    max_message_size: int = Field(default=35 * MIB, ge=1024)
    #: Longest wait for the next command line (RFC 5321 section 4.5.3.2.7 suggests 5 minutes).
    command_timeout: float = Field(default=300.0, gt=0)
    #: Longest wait between two chunks of message data.
    data_idle_timeout: float = Field(default=180.0, gt=0)
    #: Longest time the whole DATA transfer may take, however steadily it drips.
    data_timeout: float = Field(default=600.0, gt=0)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Refuse MAIL until the client has done STARTTLS.
    require_tls: bool = False
    #: Inbound AUTH (PLAIN, LOGIN; offered only over TLS): user name -> password. In the
    #: environment: one "user=password" (the password is everything after the first "="), or a
    #: JSON object for several users; a comma outside JSON is refused as ambiguous.
    auth_users: dict[str, SecretStr] = {}
    #: Refuse MAIL from clients that have not authenticated.
    require_auth: bool = False
    #: Worker processes serving the port (forked after it is bound); defaults to the number of CPUs.
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    #: SIGTERM: how long transactions in flight may take to finish.
    grace_period: float = Field(default=30.0, ge=0)
    #: Start even though ``allowed_networks`` admits a large part of the Internet on a
    #: non-loopback address without ``require_auth`` (an open relay); a warning is logged.
    allow_open_relay: bool = False

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        # It is written into the greeting and into the Received: trace (gateway.loops).
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-_]{0,252}", value):
            raise ValueError(f"not a host name: {value!r} (letters, digits, '.', '-', '_')")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    @field_validator("auth_users")
    @classmethod
    def _users(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            _check_user_name(name)
            if not secret.get_secret_value():
                raise ValueError(f"user {name!r} has an empty password")
        return value

    def open_relay(self) -> list[str]:
        """The broad entries of ``allowed_networks`` when they make an open relay, else []."""
        if self.require_auth or is_loopback_host(parse_host_port(self.listen)[0]):
            return []
        return broad_networks(self.allowed_networks)

    @model_validator(mode="after")
    def _refuse_open_relay(self) -> ListenerSettings:
        broad = self.open_relay()
        if broad and not self.allow_open_relay:
            raise ValueError(
                f"allowed_networks {broad} admits most of the Internet on listen {self.listen!r} "
                "without require_auth: an open relay. List only your MTAs' networks, or set "
                "require_auth = true with auth_users, or set allow_open_relay = true to run it anyway"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> ListenerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.require_tls and self.tls_cert is None:
            raise ValueError("require_tls needs tls_cert and tls_key")
        if self.require_auth and not self.auth_users:
            raise ValueError("require_auth needs auth_users")
        if self.auth_users and self.tls_cert is None:
            raise ValueError("auth_users needs tls_cert and tls_key (AUTH is offered only over TLS)")
        return self


class NextHopSettings(_Section):
    """Where accepted mail goes: ``HOST:PORT`` over SMTP, or ``maildir:PATH``."""

    address: str = "127.0.0.1:10026"
    #: none: never STARTTLS; opportunistic: when offered; required: 4xx unless offered.
    tls: Literal["none", "opportunistic", "required"] = "opportunistic"
    tls_verify: bool = True
    tls_ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    #: Name sent in EHLO to the next hop (defaults to the listener's hostname).
    helo_name: str | None = None
    connect_timeout: float = Field(default=15.0, gt=0)
    #: Per command (MAIL, RCPT, ...). Kept well inside the upstream's own timeouts.
    command_timeout: float = Field(default=60.0, gt=0)
    #: Waiting for the reply to the final "." (RFC 5321 section 4.5.3.2.6 allows 10 minutes;
    #: we answer the upstream well before its own wait ends).
    data_timeout: float = Field(default=120.0, gt=0)
    pool_size: int = Field(default=16, ge=0)
    #: Idle pooled connections are closed after this long: below Postfix's
    #: smtpd_timeout (300 s) and Exchange's idle limits.
    pool_idle_timeout: float = Field(default=30.0, ge=0)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.startswith("maildir:"):
            if not value[len("maildir:") :]:
                raise ValueError("maildir: needs a path")
            return value
        parse_host_port(value)
        return value

    @model_validator(mode="after")
    def _auth_pair(self) -> NextHopSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        return self

    @property
    def maildir(self) -> Path | None:
        if self.address.startswith("maildir:"):
            return Path(self.address[len("maildir:") :])
        return None


class RelaySettings(_Section):
    """Loop refusal (``gateway.loops``): RFC 5321 section 6.3."""

    #: Refuse a message that already has this many Received: fields (Postfix's hopcount_limit).
    max_hops: int = Field(default=50, ge=2, le=1000)
    #: Refuse a message whose trace shows it has already passed this gateway this many times
    #: (the same listener.hostname). A forward or a list may legitimately bring a message back
    #: once or twice.
    max_passes: int = Field(default=3, ge=1, le=100)


#: Database URL schemes bouncegw accepts as written, and the ones it rewrites: ``postgres://`` is
#: what Heroku, libpq tools and many hosted services hand out, but SQLAlchemy only knows the
#: dialect as ``postgresql``; a bare ``postgresql://`` would pick psycopg2, which is not installed.
DATABASE_SCHEMES: Mapping[str, str] = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgres+psycopg": "postgresql+psycopg",
}
SUPPORTED_DATABASES = "sqlite:///PATH or postgresql://USER@HOST/DATABASE"


class DatabaseSettings(_Section):
    url: str = "sqlite:///var/bouncegw.sqlite3"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError(f"not a database URL; expected {SUPPORTED_DATABASES}")
        normalised = DATABASE_SCHEMES.get(scheme.lower())
        if normalised is None:
            raise ValueError(
                f"unsupported database dialect or driver {scheme!r}; bouncegw supports {SUPPORTED_DATABASES}"
            )
        return f"{normalised}://{rest}"


class StorageSettings(_Section):
    """Incident storage: the outage journal, batching, privacy and retention."""

    #: Append-only, fsynced file that holds incidents while the database is down or slow.
    journal_path: Path = Path("var/journal/incidents.jsonl")
    #: When the journal is this full and the database is still down, recording fails and the
    #: relay answers 4xx (the upstream retries later) instead of losing the incident.
    journal_max_bytes: int = Field(default=64 * MIB, ge=4096)
    #: Store the original message's subject (personal data in many jurisdictions).
    store_subjects: bool = True
    #: Incidents older than this are purged; None keeps them forever.
    retention_days: int | None = Field(default=None, ge=1)
    #: Most incidents written in one transaction (group commit).
    batch_size: int = Field(default=500, ge=1)
    #: How long a batch waits for more incidents before it is written (0: write at once). Each
    #: commit costs an fsync (SQLite's WAL with synchronous=FULL) or a round trip: 2 ms let
    #: concurrent family bounces share one (``make bench``, 20 sessions of family DSNs: about
    #: 10 incidents a commit instead of 5, 7 % less CPU per bounce); a bounce's reply waits at
    #: most that much longer.
    batch_interval: float = Field(default=0.002, ge=0)
    #: A database write slower than this sends the batch to the journal instead.
    db_timeout: float = Field(default=5.0, gt=0)
    #: While the database is unavailable, the first wait before the next recovery attempt; each
    #: failed attempt doubles it (with +-20 % jitter) up to ``retry_max_interval``.
    retry_interval: float = Field(default=5.0, gt=0)
    #: The longest wait between two recovery attempts during a database outage.
    retry_max_interval: float = Field(default=60.0, gt=0)


class AdminSettings(_Section):
    """The admin HTTP port: metrics, health and the incidents API."""

    http: HostPort = "127.0.0.1:8025"
    #: Bearer token for /api/v1; without one the API answers on loopback only.
    api_token: SecretStr | None = None


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


#: A DNS name of LDH labels (RFC 1123 section 2.1): ARC's d= and the authserv-id.
HOST_NAME_RE = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9-]{1,63}"
)
#: A DKIM selector (RFC 6376 section 3.1): sub-domain labels.
SELECTOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def parse_dns_server(value: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"192.0.2.53:5353"``, ``"::1"`` or ``"[::1]:5353"`` -> (address, port)."""
    host, port = value, "53"
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"arc_dns_server = {value!r} is not an IP address with an optional :port") from None
    if not 0 < number < 65536:
        raise ValueError(f"arc_dns_server = {value!r}: the port must be 1-65535")
    return host, number


class ExplainSettings(_Section):
    """The explanation block added to family bounces (``gateway.explain``)."""

    #: Languages of the block, in this order (each needs templates/<lang>/).
    languages: list[str] = ["en", "ja"]
    #: "auto": the language the returned original was written in goes first (its
    #: Content-Language, a Japanese charset, a .jp sender); otherwise, and with
    #: "configured", the order of `languages`.
    language_order: Literal["auto", "configured"] = "auto"
    #: Directory searched before the packaged templates (same layout: <lang>/block.txt.j2, ...).
    template_dir: Path | None = None
    #: Recipients the block explains one by one; past this, one line says how many more were
    #: refused (every recipient is still recorded as an incident). Bounds the block's size.
    max_recipients_explained: int = Field(default=50, ge=1, le=10_000)
    #: Optional DKIM re-signing after the edit (all three or none).
    dkim_key_file: Path | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    #: Optional ARC sealing after the edit (RFC 8617): the four arc_* keys, all or none.
    arc_key_file: Path | None = None
    arc_selector: str | None = None
    arc_domain: str | None = None
    #: The authserv-id (RFC 8601 section 2.5) whose Authentication-Results the seal records.
    arc_authserv_id: str | None = None
    #: "upstream": results added by a verifier before bouncegw; "verify": bouncegw checks DKIM/ARC.
    arc_results: Literal["upstream", "verify"] = "upstream"
    #: DNS server for "verify" (host or host:port); the system's resolver when unset.
    arc_dns_server: str | None = None

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one language is needed")
        if len(set(value)) != len(value):
            raise ValueError("a language is listed twice")
        for lang in value:
            if not re.fullmatch(r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})?", lang):
                raise ValueError(f"not a language tag: {lang!r}")
        return value

    @model_validator(mode="after")
    def _dkim_triple(self) -> ExplainSettings:
        given = [v is not None for v in (self.dkim_key_file, self.dkim_selector, self.dkim_domain)]
        if any(given) and not all(given):
            raise ValueError("dkim_key_file, dkim_selector and dkim_domain must be given together")
        return self

    @model_validator(mode="after")
    def _arc_quadruple(self) -> ExplainSettings:
        values = (self.arc_key_file, self.arc_selector, self.arc_domain, self.arc_authserv_id)
        if any(v is not None for v in values) and not all(v is not None for v in values):
            raise ValueError(
                "arc_key_file, arc_selector, arc_domain and arc_authserv_id must be given together"
            )
        for name, value in (("arc_domain", self.arc_domain), ("arc_authserv_id", self.arc_authserv_id)):
            if value is not None and not HOST_NAME_RE.fullmatch(value):
                raise ValueError(f"{name} = {value!r} is not a domain name (letters, digits, '-' and '.')")
        if self.arc_selector is not None and not SELECTOR_RE.fullmatch(self.arc_selector):
            raise ValueError(f"arc_selector = {self.arc_selector!r} is not a DKIM selector")
        if self.arc_dns_server is not None:
            parse_dns_server(self.arc_dns_server)
        return self


class Settings(_Section):
    """The whole configuration."""

    #: Names this gateway in incidents and logs when several share a database.
    instance: str = Field(default_factory=platform.node)
    listener: ListenerSettings = ListenerSettings()
    next_hop: NextHopSettings = NextHopSettings()
    relay: RelaySettings = RelaySettings()
    database: DatabaseSettings = DatabaseSettings()
    admin: AdminSettings = AdminSettings()
    storage: StorageSettings = StorageSettings()
    log: LogSettings = LogSettings()
    explain: ExplainSettings = ExplainSettings()


#: Flags of ``bouncegw serve`` and the key each one sets.
FLAG_KEYS: Mapping[str, tuple[str, str]] = {
    "listen": ("listener", "listen"),
    "next_hop": ("next_hop", "address"),
    "database": ("database", "url"),
    "http": ("admin", "http"),
    "workers": ("listener", "workers"),
    "log_level": ("log", "level"),
    "log_format": ("log", "format"),
}


def _sections() -> set[str]:
    return {
        name
        for name, info in Settings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }


def _section_fields(section: str) -> dict[str, Any]:
    model = Settings.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return dict(model.model_fields)


def _env_mapping(raw: str) -> dict[str, str]:
    """A mapping from the environment: a JSON object, or one ``key=value`` (value: the rest).

    A comma-separated list of pairs cannot carry a value that contains "," or "=" (a password):
    "a=pa,ss=word" would silently become two entries. So several entries need JSON, and a
    comma outside JSON is refused rather than guessed at.
    """
    text = raw.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a valid JSON object ({exc.msg} at character {exc.pos})") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError('expected a JSON object of strings, e.g. {"user": "password"}')
        return value
    key, sep, rest = raw.partition("=")
    if not sep or not key.strip():
        raise ValueError('expected user=password, or a JSON object {"user": "password", ...}')
    if "," in raw:
        raise ValueError(
            "a comma is ambiguous here (part of the password, or a second user?): give a JSON "
            'object instead, e.g. {"user": "pa,ss", "user2": "word"}'
        )
    return {key.strip(): rest}


def _env_value(raw: str, annotation: Any) -> Any:
    """Turn an environment string into what the field expects (lists are comma-separated)."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if origin is dict:
        return _env_mapping(raw)
    return raw


def _from_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Collect BOUNCEGW_* variables; return (values, source of each dotted key)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    sections = _sections()
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in {"BOUNCEGW_CONFIG"}:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, sep, key = rest.partition("__")
        if not sep:
            if section in Settings.model_fields and section not in sections:
                values[section] = raw
                sources[section] = f"environment variable {name}"
                continue
            raise ConfigError(f"{name}: unknown setting (expected {ENV_PREFIX}<SECTION>__<KEY>)")
        if section not in sections:
            raise ConfigError(f"{name}: unknown section {section!r}")
        fields = _section_fields(section)
        if key not in fields:
            raise ConfigError(f"{name}: unknown key {section}.{key}")
        try:
            values.setdefault(section, {})[key] = _env_value(raw, fields[key].annotation)
        except ValueError as exc:
            raise ConfigError(f"{name} ({section}.{key}): {exc}") from None
        sources[f"{section}.{key}"] = f"environment variable {name}"
    return values, sources


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings; raise :class:`ConfigError` naming the bad key."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        try:
            with config_file.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: not valid TOML: {exc}") from None
    env_values, env_sources = _from_environment(environ)
    data = _merge(data, env_values)
    sources.update(env_sources)
    for flag, value in (flags or {}).items():
        if value is None:
            continue
        section, key = FLAG_KEYS[flag]
        data.setdefault(section, {})[key] = value
        sources[f"{section}.{key}"] = "--" + flag.replace("_", "-")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources, config_file)) from None


def _describe(exc: ValidationError, sources: Mapping[str, str], config_file: Path | None) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"])
        # A check across a section's keys fails on the section: name where its keys came from.
        within = sorted({origin for dotted, origin in sources.items() if dotted.startswith(key + ".")})
        if config_file:
            within.append(str(config_file))
        origin = sources.get(key) or ", ".join(within) or "defaults"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        lines.append(f"{key or 'configuration'}: {message} (from {origin})")
    if len(lines) == 1:  # the usual case: one line an operator can act on
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n  " + "\n  ".join(lines)


def startup_warnings(settings: Settings) -> list[str]:
    """Exposures that the configuration allows but an operator should know about, one line each."""
    warnings = []
    broad = settings.listener.open_relay()
    if broad:
        warnings.append(
            f"listener.allowed_networks {broad} on listen {settings.listener.listen!r} without "
            "require_auth is an open relay (allow_open_relay = true): anyone who reaches the port "
            "can send mail through it"
        )
    host, _ = parse_host_port(settings.admin.http)
    if settings.admin.api_token is None and not is_loopback_host(host):
        warnings.append(
            f"admin.http {settings.admin.http!r} is not loopback and admin.api_token is not set: "
            "/metrics and the health checks answer anyone who reaches the port (the incidents API "
            "still answers loopback clients only); set admin.api_token, or bind admin.http to 127.0.0.1"
        )
    return warnings


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data, secrets masked, ready to print as TOML."""

    def clean(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "********"
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    dumped = settings.model_dump(mode="python")
    # model_dump turns SecretStr into SecretStr objects, which clean() masks.
    result: dict[str, Any] = clean(dumped)
    return result
