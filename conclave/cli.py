"""The ``conclave`` command."""

from __future__ import annotations

import click

from conclave.commands.demo import demo_command
from conclave.commands.init import init_command
from conclave.commands.serve import serve_command
from conclave.commands.sip import sip_group
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
