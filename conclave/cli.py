"""The ``conclave`` command."""

from __future__ import annotations

import click

from conclave.commands.archive import archive_group
from conclave.commands.audit import audit_command
from conclave.commands.cdr import cdr_group
from conclave.commands.certs import certs_group
from conclave.commands.contacts import contacts_group, privacy_group
from conclave.commands.demo import demo_command
from conclave.commands.init import init_command
from conclave.commands.lockout import lockout_group
from conclave.commands.logs import logs_group
from conclave.commands.pool import pool_group
from conclave.commands.serve import serve_command
from conclave.commands.sip import sip_group
from conclave.commands.topology import topology_group
from conclave.commands.user import user_group


@click.group()
@click.version_option(package_name="conclave")
def main() -> None:
    """Conclave: a secure-by-default Unified Communications server."""


main.add_command(init_command)
main.add_command(user_group)
main.add_command(sip_group)
main.add_command(serve_command)
main.add_command(demo_command)
main.add_command(certs_group)
main.add_command(contacts_group)
main.add_command(privacy_group)
main.add_command(logs_group)
main.add_command(lockout_group)
main.add_command(archive_group)
main.add_command(cdr_group)
main.add_command(topology_group)
main.add_command(pool_group)
main.add_command(audit_command)
