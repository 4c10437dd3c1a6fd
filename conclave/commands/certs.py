"""``conclave certs …``: the internal CA, issuance, renewal, revocation, import, reload.

Every command works on a data directory (``--dir``). Errors are one line
(``conclave: error: …``) with exit status 1. Commands that change the
certificate a running server uses tell it to reload (SIGHUP via
``conclave.pid``); the server also notices changed files on its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization

from conclave.config import PID_FILE, Config
from conclave.pki import (
    CertificateAuthority,
    IssuedCertificate,
    PkiError,
    create_ca,
    describe,
    load_ca,
    load_certificate,
)
from conclave.pki.ca import CA_CERT_FILE, CA_KEY_FILE, KeyType
from conclave.pki.crl import CRL_FILE
from conclave.pki.index import INDEX_FILE, REVOCATION_REASONS, IndexEntry, parse_serial
from conclave.pki.inventory import check, import_certificate, listing
from conclave.pki.lifecycle import relative_to, renew_files
from conclave.pki.reload import STATUS_FILE, read_status
from conclave.pki.settings import (
    CLIENTS_DIR,
    ISSUED_DIR,
    ca_directory,
    server_required_names,
)
from conclave.sip.uri import is_ip_address
from conclave.store.database import Database
from conclave.store.users import UserStore

from .common import (
    Group,
    data_dir_option,
    fail,
    load,
    run_async,
    server_pid,
    signal_server,
)

RELOAD_WAIT = 15.0
"""Seconds ``certs reload`` waits for the server to report the outcome."""

key_type_option = click.option(
    "--key-type", default=None, help="ec (ECDSA P-256, the default) or rsa (RSA 3072)."
)
passphrase_option = click.option(
    "--passphrase-stdin", is_flag=True, help="Read the CA key's passphrase from standard input."
)


class DaysParam(click.ParamType[float, object]):
    """A number of days; a bad value says what is expected, on one line."""

    name = "DAYS"

    def __init__(self, *, whole: bool, minimum: int) -> None:
        self.whole = whole
        self.minimum = minimum

    def expected(self) -> str:
        if self.whole:
            return f"a whole number of days, {self.minimum} or more (such as 30)"
        return f"a number of days, {self.minimum} or more (such as 30 or 0.5)"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number: float = value
        else:
            try:
                number = int(str(value).strip()) if self.whole else float(str(value).strip())
            except ValueError:
                self.fail(f"expected {self.expected()}, not {value!r}", param, ctx)
        if not math.isfinite(number) or number < self.minimum:
            self.fail(f"expected {self.expected()}, not {value!r}", param, ctx)
        return number


VALIDITY_DAYS = DaysParam(whole=True, minimum=1)
days_option = click.option("--days", type=VALIDITY_DAYS, default=None, help="Validity in days.")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """PKI failures become one-line CLI errors."""
    try:
        yield
    except PkiError as exc:
        message = str(exc).splitlines()[0]
        if "a passphrase is needed" in message:
            message += " (use --passphrase-stdin)"
        raise fail(message) from None


def _key_type(value: str | None) -> KeyType:
    """``--key-type``, checked here so a bad value is a one-line error like any other."""
    if value is None or value.lower() == "ec":
        return "ec"
    if value.lower() == "rsa":
        return "rsa"
    raise fail(f"--key-type: unknown key type {value!r}; use ec or rsa")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _passphrase(wanted: bool) -> bytes | None:
    if not wanted:
        return None
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise fail("empty passphrase on standard input")
    return line.encode("utf-8")


def _ca(data_dir: Path, config: Config, passphrase_stdin: bool) -> CertificateAuthority:
    with _errors():
        return load_ca(ca_directory(data_dir, config), _passphrase(passphrase_stdin))


def _notify(data_dir: Path) -> None:
    pid = signal_server(data_dir)
    if pid is None:
        click.echo("no server running: the change applies when it starts")
        return
    click.echo(f"told the server (pid {pid}) to reload")


def _show_issued(kind: str, issued: IssuedCertificate, cert: Path, key: Path) -> None:
    info = describe(issued.certificate)
    click.echo(f"issued {kind} certificate {info.serial:X} for {info.subject}")
    click.echo(f"  names:       {', '.join(info.tagged_sans)}")
    click.echo(f"  expires:     {info.not_after:%Y-%m-%d %H:%M} UTC")
    click.echo(f"  fingerprint: SHA256 {info.sha256_fingerprint}")
    click.echo(f"  certificate: {cert}")
    click.echo(f"  key:         {key} (mode 0600)")


@click.group("certs", cls=Group)
def certs_group() -> None:
    """Certificates: the internal CA, issuance, renewal, revocation and reload."""


@certs_group.group("ca")
def ca_group() -> None:
    """The internal certificate authority."""


@ca_group.command("init")
@data_dir_option
@key_type_option
@click.option("--common-name", default=None, help="The CA's name (default: from the domain).")
@click.option("--days", type=VALIDITY_DAYS, default=3650, show_default=True, help="Validity.")
@click.option("--passphrase-stdin", is_flag=True, help="Encrypt the CA key with a passphrase.")
@click.option("--replace", is_flag=True, help="Retire an existing CA (kept in ca/retired/).")
def ca_init(
    data_dir: Path,
    key_type: str | None,
    common_name: str | None,
    days: int,
    passphrase_stdin: bool,
    replace: bool,
) -> None:
    """Create the organisation's CA (ECDSA P-256 or RSA 3072, key file mode 0600)."""
    kt = _key_type(key_type)
    config = load(data_dir) if (data_dir / "conclave.toml").exists() else None
    ca_dir = ca_directory(data_dir, config) if config else data_dir / "ca"
    name = common_name or (f"Conclave CA for {config.server.domain}" if config else "Conclave CA")
    passphrase = _passphrase(passphrase_stdin)
    if (ca_dir / CA_CERT_FILE).exists() or (ca_dir / CA_KEY_FILE).exists():
        if not replace:
            raise fail(
                f"a CA already exists: {ca_dir / CA_CERT_FILE} "
                "(refusing to overwrite it; --replace retires it)"
            )
        retired = ca_dir / "retired" / _now().strftime("%Y%m%dT%H%M%S.%f")
        try:
            retired.mkdir(parents=True, mode=0o700)
            for item in (CA_CERT_FILE, CA_KEY_FILE, INDEX_FILE, CRL_FILE):
                if (ca_dir / item).exists():
                    os.replace(ca_dir / item, retired / item)
        except OSError as exc:
            raise fail(f"cannot retire the old CA into {retired}: {exc.strerror or exc}") from None
        click.echo(f"retired the old CA to {retired}")
    with _errors():
        ca = create_ca(ca_dir, common_name=name, key_type=kt, passphrase=passphrase, days=days)
    info = describe(ca.certificate)
    click.echo(f"created CA {info.subject} in {ca_dir} ({info.key_type})")
    click.echo(f"  SHA-256 fingerprint: {info.sha256_fingerprint}")
    if replace:
        click.echo(f"Next: conclave certs issue --dir {data_dir} (a server certificate from it)")


@certs_group.command("issue")
@data_dir_option
@click.option(
    "--name", "names", multiple=True, metavar="NAME", help="An extra DNS name (pool FQDN...)."
)
@click.option("--ip", "ips", multiple=True, metavar="ADDRESS", help="An IP address to name too.")
@click.option(
    "--host", default=None, metavar="FQDN", help="Issue for another server of the pool (its FQDN)."
)
@click.option(
    "--client", "client", default=None, metavar="USER", help="Issue a client certificate for USER."
)
@days_option
@key_type_option
@click.option("--out-cert", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--out-key", type=click.Path(dir_okay=False, path_type=Path), default=None)
@passphrase_option
def issue(
    data_dir: Path,
    names: tuple[str, ...],
    ips: tuple[str, ...],
    host: str | None,
    client: str | None,
    days: int | None,
    key_type: str | None,
    out_cert: Path | None,
    out_key: Path | None,
    passphrase_stdin: bool,
) -> None:
    """Issue this server's certificate (host, domain, sip.<domain>), another's, or a user's."""
    config = load(data_dir)
    if (out_cert is None) != (out_key is None):
        raise fail("give both --out-cert and --out-key, or neither")
    if client and (host or names or ips):
        raise fail("--client cannot be combined with --host, --name or --ip")
    domain = config.server.domain
    kt = _key_type(key_type)
    if client:
        client = _check_user(data_dir, config, client)
    ca = _ca(data_dir, config, passphrase_stdin)
    with _errors():
        if client:
            issued = ca.issue_client(client, domain, days=days or 365, key_type=kt)
            kind = "client"
            default_dir = data_dir / CLIENTS_DIR
            cert, key = default_dir / f"{client}.crt", default_dir / f"{client}.key"
        elif host:
            all_names = [host, domain, f"sip.{domain}", *names]
            issued = ca.issue_server(all_names, ips, days=days or 397, key_type=kt)
            kind = "server"
            default_dir = data_dir / ISSUED_DIR
            cert, key = default_dir / f"{host.lower()}.crt", default_dir / f"{host.lower()}.key"
        else:
            required = server_required_names(config)
            dns = [n for n in required if not is_ip_address(n)] + list(names)
            addresses = [n for n in required if is_ip_address(n)] + list(ips)
            issued = ca.issue_server(dns, addresses, days=days or 397, key_type=kt)
            kind = "server"
            cert = config.path(data_dir, config.tls.cert)
            key = config.path(data_dir, config.tls.key)
        cert, key = out_cert or cert, out_key or key
        previous = _serial_in(cert)
        issued.write(cert, key)
        ca.record_files(issued.serial, relative_to(data_dir, cert), relative_to(data_dir, key))
        if previous is not None:
            ca.index.supersede(previous, issued.serial)
    _show_issued(kind, issued, cert, key)
    if _is_server_cert(data_dir, config, cert):
        _notify(data_dir)


def _serial_in(path: Path) -> int | None:
    try:
        return load_certificate(path).serial_number
    except PkiError:
        return None


def _is_server_cert(data_dir: Path, config: Config, path: Path) -> bool:
    return Path(path).resolve() == config.path(data_dir, config.tls.cert).resolve()


def _check_user(data_dir: Path, config: Config, name: str) -> str:
    """The stored spelling of user ``name``: a certificate names the one identity."""
    domain = config.server.domain

    async def lookup() -> Any:
        async with Database(config.database_url(data_dir)) as db:
            await db.check_schema()
            return await UserStore(db).get(name, domain)

    record = run_async(lookup)
    if record is None:
        raise fail(f"no such user: {name}@{domain} (add it with `conclave user add`)")
    return str(record.name)


def _find(ca: CertificateAuthority, target: str) -> IndexEntry:
    with _errors():
        serial = parse_serial(target)
        entry = ca.index.find(serial)
    if entry is None:
        raise fail(f"no certificate with serial {target} in {ca.index.path} (see `certs list`)")
    return entry


@certs_group.command("renew")
@click.argument("target", default="server")
@data_dir_option
@days_option
@passphrase_option
def renew(data_dir: Path, target: str, days: int | None, passphrase_stdin: bool) -> None:
    """Re-issue a certificate with the same names and a new key: `server` or a SERIAL."""
    config = load(data_dir)
    ca = _ca(data_dir, config, passphrase_stdin)
    server_cert = config.path(data_dir, config.tls.cert)
    server_key = config.path(data_dir, config.tls.key)
    if target == "server":
        cert, key = server_cert, server_key
    else:
        entry = _find(ca, target)
        if entry.status == "revoked":
            raise fail(f"certificate {entry.serial_hex} is revoked: issue a new one instead")
        if entry.cert_path and entry.key_path:
            cert = config.path(data_dir, entry.cert_path)
            key = config.path(data_dir, entry.key_path)
        elif _serial_in(server_cert) == entry.serial:
            cert, key = server_cert, server_key
        else:
            raise fail(f"certificate {entry.serial_hex} has no recorded files: issue a new one")
        if _serial_in(cert) != entry.serial:
            raise fail(f"{cert} no longer holds certificate {entry.serial_hex}")
    required = server_required_names(config) if cert == server_cert else ()
    with _errors():
        _old, new = renew_files(ca, cert, key, required=required, days=days, data_dir=data_dir)
    _show_issued("renewed", new, cert, key)
    if _is_server_cert(data_dir, config, cert):
        _notify(data_dir)


@certs_group.command("revoke")
@click.argument("target")
@data_dir_option
@click.option("--reason", default="unspecified", help=f"One of: {', '.join(REVOCATION_REASONS)}.")
@passphrase_option
def revoke(data_dir: Path, target: str, reason: str, passphrase_stdin: bool) -> None:
    """Revoke a certificate by SERIAL (or `server`) and publish a new CRL."""
    if reason not in REVOCATION_REASONS:
        raise fail(f"--reason: unknown reason {reason!r}; use {', '.join(REVOCATION_REASONS)}")
    config = load(data_dir)
    ca = _ca(data_dir, config, passphrase_stdin)
    if target == "server":
        with _errors():
            entry = ca.adopt(load_certificate(config.path(data_dir, config.tls.cert)))
        target = entry.serial_hex
    entry = _find(ca, target)
    with _errors():
        revoked = ca.revoke(entry.serial, reason=reason)
    click.echo(f"revoked {revoked.serial_hex} ({revoked.subject}), reason {reason}")
    click.echo(f"published CRL {ca.crl_path}")
    if _serial_in(config.path(data_dir, config.tls.cert)) == entry.serial:
        click.echo("this is the server's own certificate: renew it (the server does if it can)")
    _notify(data_dir)


@certs_group.command("crl")
@data_dir_option
@passphrase_option
def publish_crl(data_dir: Path, passphrase_stdin: bool) -> None:
    """Re-sign and publish the CRL (a server does this itself unless the CA key is locked)."""
    config = load(data_dir)
    ca = _ca(data_dir, config, passphrase_stdin)
    with _errors():
        crl = ca.publish_crl()
    next_update = crl.next_update_utc
    until = f"{next_update:%Y-%m-%d %H:%M} UTC" if next_update else "?"
    click.echo(f"published CRL {ca.crl_path}: {len(crl)} revoked, valid until {until}")
    _notify(data_dir)


@certs_group.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def list_certs(data_dir: Path, as_json: bool) -> None:
    """Subject, names, issuer, expiry, fingerprint and status of every certificate."""
    config = load(data_dir)
    with _errors():
        rows = listing(data_dir, config, _now())
    if as_json:
        click.echo(json.dumps([row.to_json() for row in rows], indent=2))
        return
    for row in rows:
        click.echo(f"{row.role}  {row.path}  [{row.status}]")
        if not row.subject:
            continue
        expires = f"{row.not_after:%Y-%m-%d %H:%M} UTC" if row.not_after else "?"
        click.echo(f"  subject:     {row.subject}")
        click.echo(f"  names:       {', '.join(row.sans) or '-'}")
        click.echo(f"  issuer:      {row.issuer}")
        click.echo(f"  expires:     {expires}")
        click.echo(f"  serial:      {row.serial}")
        click.echo(f"  fingerprint: SHA256 {row.fingerprint}")


@certs_group.command("check")
@data_dir_option
@click.option(
    "--days",
    type=DaysParam(whole=False, minimum=0),
    default=30,
    show_default=True,
    help="Report certificates that expire within this many days.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: ok, days, problems.")
def check_certs(data_dir: Path, days: float, as_json: bool) -> None:
    """Exit 1 if a certificate in use expires within DAYS, misses a name or is untrusted."""
    config = load(data_dir)
    with _errors():
        problems = check(data_dir, config, days, _now())
    if as_json:
        click.echo(json.dumps({"ok": not problems, "days": days, "problems": problems}, indent=2))
        if problems:
            sys.exit(1)
        return
    for problem in problems:
        click.echo(problem)
    if problems:
        raise fail(f"{len(problems)} certificate problem(s) found")
    click.echo(f"ok: every certificate in use is valid for more than {days:g} days")


@certs_group.command("import")
@click.argument("cert", type=click.Path(path_type=Path))
@click.argument("key", type=click.Path(path_type=Path))
@data_dir_option
@click.option("--chain", type=click.Path(path_type=Path), default=None, help="Intermediates.")
@click.option("--name", "names", multiple=True, help="A name it must cover (default: its own).")
@click.option("--label", default=None, help="Directory name under tls/imported/.")
def import_cert(
    cert: Path,
    key: Path,
    data_dir: Path,
    chain: Path | None,
    names: tuple[str, ...],
    label: str | None,
) -> None:
    """Import a certificate and key from a public CA, for edge-facing names."""
    load(data_dir)
    with _errors():
        result = import_certificate(
            data_dir, cert, key, chain_path=chain, names=names, label=label, now=_now()
        )
    click.echo(f"imported {result.info.subject} as {result.label} into {result.directory}")
    click.echo(f"  names:   {', '.join(result.names)}")
    click.echo(f"  expires: {result.info.not_after:%Y-%m-%d %H:%M} UTC")
    click.echo(f"  check it chains to a trusted root: conclave certs check --dir {data_dir}")


@certs_group.command("export-ca")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@data_dir_option
@click.option("--der", is_flag=True, help="DER instead of PEM.")
def export_ca(out: Path, data_dir: Path, der: bool) -> None:
    """Write the CA certificate for clients to trust, and print its fingerprint."""
    config = load(data_dir)
    with _errors():
        cert = load_certificate(config.path(data_dir, config.tls.ca))
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    try:
        out.write_bytes(cert.public_bytes(encoding))
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    info = describe(cert)
    click.echo(f"wrote {info.subject} to {out} ({'DER' if der else 'PEM'})")
    click.echo(f"SHA-256 fingerprint: {info.sha256_fingerprint}")


@certs_group.command("reload")
@data_dir_option
def reload_certs(data_dir: Path) -> None:
    """Make the running server reload its certificate now, and report the outcome."""
    load(data_dir)
    pid = server_pid(data_dir)
    if pid is None:
        raise fail(f"no server is running for {data_dir} (no live {PID_FILE})")
    status_path = data_dir / STATUS_FILE
    before = read_status(status_path) or {}
    seq = before.get("seq", 0) if before.get("pid") == pid else 0
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise fail(f"cannot signal server pid {pid}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        status = read_status(status_path) or {}
        if status.get("pid") == pid and status.get("seq", 0) > seq:
            if status.get("trigger") == "signal":
                break
            seq = status.get("seq", 0)  # a reload of its own (file change): keep waiting
        time.sleep(0.05)
    else:
        raise fail(f"server pid {pid} did not report a reload within {RELOAD_WAIT:g}s")
    if status.get("outcome") != "reloaded":
        raise fail(
            f"certificate reload refused: {status.get('reason')} "
            f"(still serving SHA256 {status.get('fingerprint')})"
        )
    click.echo(f"certificate reloaded: {status.get('subject')}")
    click.echo(f"  fingerprint: SHA256 {status.get('fingerprint')}")
    click.echo(f"  expires:     {status.get('not_after')}")
