"""The ``conclave`` command."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="conclave")
def main() -> None:
    """Conclave: a secure-by-default Unified Communications server."""
