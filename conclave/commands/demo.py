"""``conclave demo``: the demo deployment `make run` serves (example.test, alice, bob)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from conclave.store.passwords import generate_password

from .common import data_dir_option, load
from .init import initialise
from .user import _store_call

DEMO_DOMAIN = "example.test"
DEMO_USERS = ("alice", "bob", "admin")
DEMO_ADMINS = ("admin",)
"""Who may sign in to the demo's admin console (a user like the others)."""
DEMO_ADMIN = "127.0.0.1:9464"
"""Where the demo's admin listener serves /metrics, /health and /ready (loopback only)."""
DEMO_WEB = ("127.0.0.1:8443", "127.0.0.1:8080")
"""The demo's web face (loopback only): HTTPS with the browser client, and the CRL."""


@click.command("demo")
@data_dir_option
@click.option("--tls-port", type=click.IntRange(0, 65535), default=5061, show_default=True)
def demo_command(data_dir: Path, tls_port: int) -> None:
    """Create the demo deployment once (prints the passwords), or describe it."""
    if (data_dir / "conclave.toml").exists():
        config = load(data_dir)
        click.echo(f"Demo deployment for {config.server.domain} in {data_dir}.")
        click.echo(
            "Passwords were printed when it was created; reset one with "
            f"`conclave user passwd alice --dir {data_dir}`."
        )
    else:
        initialise(
            data_dir,
            domain=DEMO_DOMAIN,
            host="127.0.0.1",
            transports=("tls",),
            tls_port=tls_port,
            sip_port=5060,
            admin=DEMO_ADMIN,
            web=DEMO_WEB,
            console=DEMO_ADMINS,
        )
        config = load(data_dir)
        click.echo(f"Created a demo deployment for {DEMO_DOMAIN} in {data_dir}.")
        for name in DEMO_USERS:
            password = generate_password()
            _store_call(data_dir, "add", name, password)
            click.echo(f"  user {name}@{DEMO_DOMAIN}  password {password}")
        click.echo("  (passwords are shown once; they are stored only as digest hashes)")
    ca = (data_dir / config.tls.ca).resolve()
    port = config.transports.tls_port
    host = config.transports.bind
    click.echo("")
    click.echo(f"CA certificate to trust: {ca}")
    click.echo(f"Server: SIP over TLS on {host}:{port}")
    if config.web.enabled and config.transports.ws:
        click.echo(
            f"Web client: https://{config.web.bind}/ (the browser must trust the CA: "
            f"import http://{config.web.crl_bind}/pki/ca.crt as an authority)"
        )
    if config.admin.enabled:
        scheme = "https" if config.admin.console else "http"
        base = f"{scheme}://{config.admin.bind}"
        click.echo(f"Monitoring: {base}/metrics (Prometheus), /health, /ready")
        if config.admin.console:
            who = ", ".join(config.admin.admins)
            click.echo(f"Admin console: {base}/console (sign in as {who}); API: {base}/api/v1")
    else:
        click.echo(
            f'Monitoring is off: set [admin] enabled = true and bind = "{DEMO_ADMIN}" '
            f"in {data_dir / 'conclave.toml'}"
        )
    command = os.path.relpath(Path(sys.executable).parent / "conclave")
    click.echo(
        f"The conclave command is {command} (not on your PATH; or run "
        f"`. {Path(command).parent}/activate` first), e.g."
    )
    click.echo(f"  {command} user list --dir {data_dir}")
    click.echo("")
    click.echo("baresip: in ~/.baresip/config set   sip_cafile " + str(ca))
    click.echo("         and add to ~/.baresip/accounts:")
    click.echo(
        f"  <sip:alice@{DEMO_DOMAIN}>;auth_pass=PASSWORD;"
        f'outbound="sip:{host}:{port};transport=tls";regint=600;pubint=600'
    )
    click.echo("         (the TLS transport goes on the outbound proxy, not on the address)")
    click.echo(
        f"Linphone: SIP address sip:alice@{DEMO_DOMAIN}, server "
        f"<sip:sip.{DEMO_DOMAIN}:{port};transport=tls;maddr={host}>, transport TLS; "
        "import the CA certificate above (Linphone verifies the server by name: "
        f"sip.{DEMO_DOMAIN} is on its certificate, maddr saves a DNS entry)."
    )
    click.echo("")
