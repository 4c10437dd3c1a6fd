"""Audit rules for one data directory: what a host really runs with.

Reads ``conclave.toml``, the files it names, the users table and, when the
server is running, the sockets it listens on. ``roles`` says what the
directory serves (a ``conclave init`` directory is a Standard Edition:
``frontend``).
"""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Iterable
from pathlib import Path

from conclave.config import CONFIG_FILENAME, Config, ConfigError, load_config
from conclave.ops.lockout import STATE_FILE as LOCKOUT_STATE_FILE
from conclave.ops.logbuffer import BUFFER_DIR
from conclave.ops.logbuffer import DB_FILE as BUFFER_DB_FILE
from conclave.store.database import SQLITE_SIDE_FILES, sqlite_path
from conclave.store.errors import StoreError
from conclave.store.passwords import MIN_LENGTH
from conclave.topology.catalogue import is_loopback, split_endpoint

from .findings import Finding
from .live import listening_sockets, running_pid
from .passwords import candidates, read_users, weak_passwords
from .tls import certificate_findings

MAX_FAILURES_PER_MINUTE = 100
MIN_BAN_SECONDS = 60.0


def audit_data_dir(
    data_dir: Path,
    *,
    roles: Iterable[str] = ("frontend",),
    now: dt.datetime,
    standalone: bool = True,
    directory_threshold: int = 0,
    check_users: bool = True,
) -> list[Finding]:
    """Every finding for the deployment in ``data_dir``.

    ``standalone``: the directory is audited on its own, so deployment-wide
    rules (a logging controller) are judged from its config; with a topology
    they are judged from the topology instead.
    """
    data_dir = Path(data_dir)
    roles = tuple(roles)
    where = str(data_dir / "conclave.toml")
    try:
        config = load_config(data_dir)
    except ConfigError as exc:
        return [Finding("CONFIG-INVALID", str(exc).splitlines()[0], where)]
    findings: list[Finding] = []
    findings += _permissions(data_dir, config)
    findings += _settings(config, roles, where, standalone, directory_threshold)
    findings += _certificates(data_dir, config, now)
    if "frontend" in roles and check_users:
        findings += _users(data_dir, config)
    findings += _live(data_dir, config, roles)
    return findings


def private_files(data_dir: Path, config: Config) -> list[tuple[str, Path]]:
    """What only the server's user may read or write: ``(kind, path)``.

    The directory itself; the private keys; ``conclave.toml`` (it names every
    file, and a PostgreSQL URL may carry a password); the SQLite database
    (digest HA1 values are password equivalents) and the logging store and
    buffer (users, Call-IDs, addresses), each with the ``-wal``, ``-shm`` and
    ``-journal`` files SQLite keeps beside it.
    """
    files: list[tuple[str, Path]] = [
        ("directory", data_dir),
        ("private key", config.path(data_dir, config.tls.key)),
        ("private key", data_dir / "ca" / "ca.key"),
        ("configuration", data_dir / CONFIG_FILENAME),
        ("lockout state", data_dir / LOCKOUT_STATE_FILE),
        ("media relay secret", config.path(data_dir, config.media_relay.secret_file)),
    ]
    databases: list[tuple[str, Path | None]] = [
        ("database", sqlite_path(config.database_url(data_dir))),
        ("event store", config.path(data_dir, config.logging_controller.store)),
        ("event buffer", data_dir / BUFFER_DIR / BUFFER_DB_FILE),
    ]
    for kind, path in databases:
        if path is not None:
            files.append((kind, path))
            files += [(kind, path.with_name(path.name + s)) for s in SQLITE_SIDE_FILES]
    return files


def _permissions(data_dir: Path, config: Config) -> list[Finding]:
    findings: list[Finding] = []
    for kind, path in private_files(data_dir, config):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # not there (yet): nothing to expose
        if mode & 0o077:
            findings.append(
                Finding(
                    "DATA-PERMISSIONS",
                    f"{kind} {path} has mode {mode:04o}: group or others can access it",
                    str(path),
                )
            )
    return findings


def _settings(
    config: Config, roles: tuple[str, ...], where: str, standalone: bool, directory_threshold: int
) -> list[Finding]:
    findings: list[Finding] = []
    t = config.transports
    edge = config.edge
    if "edge" in roles and (
        edge.internal_bind in ("0.0.0.0", "::") or edge.internal_bind == edge.external_bind
    ):
        findings.append(
            Finding(
                "EDGE-INTERNAL-EXPOSED",
                f"the internal side (mutual TLS from the pool) binds {edge.internal_bind}, "
                "which the internet reaches",
                f"{where}: edge.internal_bind",
            )
        )
    if "frontend" in roles:
        for name, port in t.enabled():
            if name != "tls":
                findings.append(
                    Finding(
                        "TRANSPORT-PLAIN",
                        f"plain SIP over {name.upper()} listens on {t.bind}:{port}",
                        f"{where}: transports.{name}",
                    )
                )
        if "MD5" in config.auth.algorithms:
            findings.append(
                Finding(
                    "DIGEST-MD5",
                    "digest challenges offer MD5 as well as SHA-256",
                    f"{where}: auth.algorithms",
                )
            )
    if config.admin.enabled:
        address, port = split_endpoint(config.admin.bind)
        if not is_loopback(address):
            findings.append(
                Finding(
                    "ADMIN-EXPOSED",
                    f"the admin interface listens on {address}:{port}",
                    f"{where}: admin.bind",
                )
            )
    limits = config.limits
    if limits.auth_failures_per_minute > MAX_FAILURES_PER_MINUTE:
        findings.append(
            Finding(
                "LOCKOUT-WEAK",
                f"{limits.auth_failures_per_minute} failed authentications a minute are "
                f"allowed per source (at most {MAX_FAILURES_PER_MINUTE})",
                f"{where}: limits.auth_failures_per_minute",
            )
        )
    if limits.ban_seconds < MIN_BAN_SECONDS:
        findings.append(
            Finding(
                "LOCKOUT-WEAK",
                f"a banned source is refused for {limits.ban_seconds:g}s only",
                f"{where}: limits.ban_seconds",
            )
        )
    if directory_threshold and limits.auth_failures_per_minute >= directory_threshold:
        findings.append(
            Finding(
                "LOCKOUT-ABOVE-DIRECTORY",
                f"threshold {limits.auth_failures_per_minute} is not below the directory's "
                f"{directory_threshold}",
                f"{where}: limits.auth_failures_per_minute",
            )
        )
    if standalone and "logging-controller" not in roles and not config.logging.controller:
        findings.append(
            Finding(
                "LOGGING-NO-CONTROLLER",
                "no logging controller: events stay on this server",
                f"{where}: logging.controller",
            )
        )
    return findings


def _certificates(data_dir: Path, config: Config, now: dt.datetime) -> list[Finding]:
    findings: list[Finding] = []
    for what, relative, key in (
        ("server certificate", config.tls.cert, "tls.cert"),
        ("CA certificate", config.tls.ca, "tls.ca"),
    ):
        path = config.path(data_dir, relative)
        found, _leaf = certificate_findings(
            path, f"{data_dir}/conclave.toml: {key}", now, what=what
        )
        findings += found
    return findings


def _users(data_dir: Path, config: Config) -> list[Finding]:
    url = config.database_url(data_dir)
    where = f"users of {data_dir}"
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():  # opening it would create it
            return [Finding("USERS-UNREADABLE", f"database file {path} does not exist", where)]
    try:
        users = read_users(url)
    except StoreError as exc:
        return [Finding("USERS-UNREADABLE", str(exc).splitlines()[0], where)]
    findings = [
        Finding(
            "PASSWORD-POLICY",
            f"the password of {weak.user}@{weak.domain} is a guessable {weak.kind} variant "
            f"and fails the policy (at least {MIN_LENGTH} characters, not the user name)",
            f"user {weak.user}@{weak.domain} in {data_dir}",
        )
        for weak in weak_passwords(users)
    ]
    tried = len(candidates("user", "example.test"))
    findings.append(
        Finding(
            "PASSWORD-UNVERIFIABLE",
            f"{len(users)} enabled user(s) tested with about {tried} guessable candidates "
            "each; passwords are stored as digest hashes only, so a weak password outside "
            "those candidates cannot be detected",
            where,
        )
    )
    return findings


def _expected(config: Config, role: str) -> set[tuple[str, int]]:
    """(protocol, port) the role may listen on; port 0 stands for any port."""
    expected: set[tuple[str, int]] = set()
    if role == "frontend":
        for name, port in config.transports.enabled():
            expected.add(("udp" if name == "udp" else "tcp", port))
        if config.admin.enabled:
            expected.add(("tcp", split_endpoint(config.admin.bind)[1]))
        if config.web.enabled:
            expected.add(("tcp", split_endpoint(config.web.crl_bind)[1]))
            expected.add(("tcp", split_endpoint(config.web.bind)[1]))
    elif role == "logging-controller":
        expected.add(("tcp", split_endpoint(config.logging_controller.listen)[1]))
    return expected


def _live(data_dir: Path, config: Config, roles: tuple[str, ...]) -> list[Finding]:
    findings: list[Finding] = []
    for role in roles:
        pid = running_pid(data_dir, role)
        if pid is None:
            continue
        sockets = listening_sockets(pid)
        if sockets is None:
            continue
        expected = _expected(config, role)
        wildcard = {protocol for protocol, port in expected if port == 0}
        for sock in sockets:
            if (sock.protocol, sock.port) in expected or sock.protocol in wildcard:
                continue
            findings.append(
                Finding(
                    "PORT-UNEXPECTED",
                    f"the {role} process {pid} listens on {sock.protocol.upper()} "
                    f"{sock.address}:{sock.port}, which its configuration does not open",
                    f"{data_dir} (pid {pid})",
                )
            )
    return findings
