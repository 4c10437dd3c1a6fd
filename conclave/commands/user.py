"""``conclave user …``: local accounts (passwords are stored only as digest HA1 values)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from conclave.store.database import Database
from conclave.store.passwords import generate_password, password_policy_problems
from conclave.store.users import UserRecord, UserStore

from .common import Group, data_dir_option, fail, load, notify_server, run_async


def _read_password(stdin: bool, name: str) -> tuple[str, bool]:
    """The password to set and whether it was generated."""
    if not stdin:
        return generate_password(), True
    text = sys.stdin.readline().rstrip("\r\n")
    problems = password_policy_problems(text, user=name)
    if problems:
        raise fail(f"password rejected: {problems[0]}")
    return text, False


def _store_call(data_dir: Path, action: str, name: str, *args: object) -> object:
    """Call ``UserStore.<action>(name, domain, *args)``; a store error is a one-line CLI error.

    The store finds ``name`` in any case (user names are unique regardless
    of case) and returns the user's record with the stored, canonical name.
    """
    config = load(data_dir)
    url = config.database_url(data_dir)

    async def go() -> object:
        async with Database(url) as db:
            await db.check_schema()
            method = getattr(UserStore(db), action)
            return await method(name, config.server.domain, *args)

    result = run_async(go)
    notify_server(data_dir)
    return result


def _canonical(result: object, name: str) -> str:
    """The stored name of the user a command acted on (``name`` may differ in case)."""
    return result.name if isinstance(result, UserRecord) else name


@click.group("user", cls=Group)
def user_group() -> None:
    """Manage user accounts."""


@user_group.command("add")
@click.argument("name")
@data_dir_option
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_add(name: str, data_dir: Path, password_stdin: bool) -> None:
    """Add a user. Without --password-stdin a strong password is generated and printed once."""
    load(data_dir)
    password, generated = _read_password(password_stdin, name)
    _store_call(data_dir, "add", name, password)
    domain = load(data_dir).server.domain
    click.echo(f"added {name}@{domain}")
    if generated:
        click.echo(f"password: {password}")
        click.echo("(shown once; it is stored only as a digest hash)")


@user_group.command("passwd")
@click.argument("name")
@data_dir_option
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_passwd(name: str, data_dir: Path, password_stdin: bool) -> None:
    """Set a user's password (generated and printed once unless --password-stdin)."""
    load(data_dir)
    password, generated = _read_password(password_stdin, name)
    user = _store_call(data_dir, "set_password", name, password)
    click.echo(f"password changed for {_canonical(user, name)}")
    if generated:
        click.echo(f"password: {password}")


@user_group.command("disable")
@click.argument("name")
@data_dir_option
def user_disable(name: str, data_dir: Path) -> None:
    """Stop a user from signing in (their account and data are kept)."""
    user = _store_call(data_dir, "set_disabled", name, True)
    click.echo(f"disabled {_canonical(user, name)}")


@user_group.command("enable")
@click.argument("name")
@data_dir_option
def user_enable(name: str, data_dir: Path) -> None:
    """Allow a disabled user to sign in again."""
    user = _store_call(data_dir, "set_disabled", name, False)
    click.echo(f"enabled {_canonical(user, name)}")


@user_group.command("remove")
@click.argument("name")
@data_dir_option
def user_remove(name: str, data_dir: Path) -> None:
    """Delete a user."""
    user = _store_call(data_dir, "remove", name)
    click.echo(f"removed {_canonical(user, name)}")


@user_group.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array of users.")
def user_list(data_dir: Path, as_json: bool) -> None:
    """List users: address, state and creation time."""
    config = load(data_dir)
    url = config.database_url(data_dir)

    async def go() -> list[UserRecord]:
        async with Database(url) as db:
            await db.check_schema()
            return await UserStore(db).list(config.server.domain)

    users = run_async(go)
    if as_json:
        rows = [
            {
                "name": u.name,
                "address": u.address,
                "state": "disabled" if u.disabled else "enabled",
                "created": u.created_at.isoformat(),
            }
            for u in users
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for u in users:
        state = "disabled" if u.disabled else "enabled"
        click.echo(f"{u.address}\t{state}\t{u.created_at.isoformat()}")
