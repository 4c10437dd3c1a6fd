"""``conclave init``: a new deployment's data directory, CA, certificate and database."""

from __future__ import annotations

import os
from pathlib import Path

import click

from conclave.config import ConfigError, config_from_mapping, write_config, write_default_config
from conclave.pki import create_ca
from conclave.pki.errors import PkiError
from conclave.sip.uri import is_ip_address
from conclave.store.database import migrate
from conclave.store.errors import StoreError
from conclave.web.publish import crl_url_for

from .common import Command, data_dir_option, fail

TRANSPORTS = ("tls", "tcp", "udp")

PRIVATE_UMASK = 0o077
"""While ``init`` writes: files it creates are readable by their owner only."""


def initialise(
    data_dir: Path,
    *,
    domain: str,
    host: str,
    transports: tuple[str, ...],
    tls_port: int,
    sip_port: int,
    admin: str | None = None,
    web: tuple[str, str] | None = None,
    console: tuple[str, ...] = (),
) -> None:
    """Create everything a Standard Edition server needs in ``data_dir``.

    ``admin`` (``host:port``) turns the admin listener (``/metrics``,
    ``/health``, ``/ready``) on there; by default it stays off. ``web``
    (HTTPS ``host:port``, CRL ``host:port``) turns the web face on there, SIP
    over WebSocket and the browser client with it, and the server certificate
    names the CRL's URL. ``console`` (user names, with ``admin``) serves the
    admin console and API on the admin listener, over HTTPS, to those users.
    Everything is created private (umask 077 while we work): ``conclave.toml``
    names every file and secret-bearing setting, ``conclave.db`` holds digest
    HA1 values (password equivalents). Certificates are made 0644 explicitly.
    """
    if (data_dir / "conclave.toml").exists():
        raise fail(f"{data_dir} already holds a deployment (conclave.toml exists)")
    if admin is not None:  # checked before anything is written
        try:
            config_from_mapping(
                {
                    "server": {"domain": "example.test", "host": "127.0.0.1"},  # valid
                    "admin": {"enabled": True, "bind": admin},
                },
                source="--admin",
            )
        except ConfigError:
            raise fail(
                f"--admin: must be HOST:PORT such as 127.0.0.1:9464 (IPv6 as [::1]:9464), "
                f"not {admin!r}"
            ) from None
    previous = os.umask(PRIVATE_UMASK)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        _create(data_dir, domain, host, transports, tls_port, sip_port, admin, web, console)
    finally:
        os.umask(previous)


def _create(
    data_dir: Path,
    domain: str,
    host: str,
    transports: tuple[str, ...],
    tls_port: int,
    sip_port: int,
    admin: str | None,
    web: tuple[str, str] | None = None,
    console: tuple[str, ...] = (),
) -> None:
    try:
        config = write_default_config(
            data_dir,
            domain=domain,
            host=host,
            transports=transports,
            tls_port=tls_port,
            sip_port=sip_port,
            # Listen where the host name says, not on every interface: a
            # fresh install exposes only what was asked for.
            bind=host if is_ip_address(host) else None,
        )
        if admin is not None:
            data = config.model_dump(mode="python")
            data["admin"] = {"enabled": True, "bind": admin}
            if console:  # the console and admin API, over HTTPS, for these users
                data["admin"].update(console=True, admins=list(console))
            config = config_from_mapping(data, source="--admin")
            write_config(data_dir, config)
        if web is not None:
            data = config.model_dump(mode="python")
            data["web"] = {**data["web"], "enabled": True, "bind": web[0], "crl_bind": web[1]}
            data["transports"]["ws"] = True
            config = config_from_mapping(data, source="web")
            write_config(data_dir, config)
        ca = create_ca(
            config.path(data_dir, str(Path(config.tls.ca).parent)),
            common_name=f"Conclave CA for {domain}",
        )
        if web is not None:  # the first certificate already names where its CRL is
            ca.set_crl_urls([crl_url_for(host, int(web[1].rpartition(":")[2]))])
        names = [n for n in dict.fromkeys([host, domain, f"sip.{domain}"]) if not is_ip_address(n)]
        ips = [host] if is_ip_address(host) else []
        issued = ca.issue_server(names, ips)
        issued.write(config.path(data_dir, config.tls.cert), config.path(data_dir, config.tls.key))
        migrate(config.database_url(data_dir))
    except (ConfigError, PkiError, StoreError) as exc:
        raise fail(str(exc).splitlines()[0]) from None


@click.command("init", cls=Command)
@click.option("--domain", required=True, help="The SIP domain users sign in to.")
@data_dir_option
@click.option(
    "--transports",
    default="tls",
    show_default=True,
    help="Comma-separated: tls, tcp, udp. Only TLS is on unless you ask.",
)
@click.option("--tls-port", type=click.IntRange(0, 65535), default=5061, show_default=True)
@click.option("--sip-port", type=click.IntRange(0, 65535), default=5060, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The server's FQDN or IP address (named in its certificate; an IP is also bound).",
)
@click.option(
    "--admin",
    default=None,
    metavar="HOST:PORT",
    help="Serve /metrics, /health and /ready there (e.g. 127.0.0.1:9464); off by default.",
)
def init_command(
    domain: str,
    data_dir: Path,
    transports: str,
    tls_port: int,
    sip_port: int,
    host: str,
    admin: str | None,
) -> None:
    """Create a new deployment: config, internal CA, server certificate, database."""
    chosen = tuple(t.strip().lower() for t in transports.split(",") if t.strip())
    bad = [t for t in chosen if t not in TRANSPORTS]
    if bad or not chosen:
        raise fail(
            f"--transports: unknown transport {bad[0] if bad else '(none)'!r}; use tls,tcp,udp"
        )
    initialise(
        data_dir,
        domain=domain.lower(),
        host=host,
        transports=chosen,
        tls_port=tls_port,
        sip_port=sip_port,
        admin=admin,
    )
    click.echo(f"Initialised {domain} in {data_dir}")
    click.echo(f"  CA certificate (trust this in clients): {data_dir / 'ca' / 'ca.crt'}")
    click.echo(f"  Transports: {', '.join(chosen)}")
    if admin is not None:
        click.echo(f"  Monitoring: http://{admin}/metrics, /health and /ready")
    click.echo(f"Next: conclave user add NAME --dir {data_dir}; conclave serve --dir {data_dir}")
