"""The ``conclave`` command.

Subcommands are imported when they are run, not when ``conclave`` starts:
every command module pulls in its own part of the server (the store, the
PKI, the topology), and importing them all cost every CLI call about a
second before it did anything.
"""

from __future__ import annotations

from collections.abc import Callable

import click


def _archive() -> click.Command:
    from conclave.commands.archive import archive_group

    return archive_group


def _audit() -> click.Command:
    from conclave.commands.audit import audit_command

    return audit_command


def _cdr() -> click.Command:
    from conclave.commands.cdr import cdr_group

    return cdr_group


def _certs() -> click.Command:
    from conclave.commands.certs import certs_group

    return certs_group


def _contacts() -> click.Command:
    from conclave.commands.contacts import contacts_group

    return contacts_group


def _demo() -> click.Command:
    from conclave.commands.demo import demo_command

    return demo_command


def _init() -> click.Command:
    from conclave.commands.init import init_command

    return init_command


def _lockout() -> click.Command:
    from conclave.commands.lockout import lockout_group

    return lockout_group


def _logs() -> click.Command:
    from conclave.commands.logs import logs_group

    return logs_group


def _pool() -> click.Command:
    from conclave.commands.pool import pool_group

    return pool_group


def _privacy() -> click.Command:
    from conclave.commands.contacts import privacy_group

    return privacy_group


def _serve() -> click.Command:
    from conclave.commands.serve import serve_command

    return serve_command


def _sip() -> click.Command:
    from conclave.commands.sip import sip_group

    return sip_group


def _topology() -> click.Command:
    from conclave.commands.topology import topology_group

    return topology_group


def _user() -> click.Command:
    from conclave.commands.user import user_group

    return user_group


#: Command name -> the function that imports it (literal imports, so the
#: layering test can read them).
COMMANDS: dict[str, Callable[[], click.Command]] = {
    "archive": _archive,
    "audit": _audit,
    "cdr": _cdr,
    "certs": _certs,
    "contacts": _contacts,
    "demo": _demo,
    "init": _init,
    "lockout": _lockout,
    "logs": _logs,
    "pool": _pool,
    "privacy": _privacy,
    "serve": _serve,
    "sip": _sip,
    "topology": _topology,
    "user": _user,
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        load = COMMANDS.get(cmd_name)
        return None if load is None else load()


@click.group(cls=LazyGroup)
@click.version_option(package_name="conclave")
def main() -> None:
    """Conclave: a secure-by-default Unified Communications server."""
