"""``conclave archive …``: verify, export, purge, and the archiving policies.

DATE options take ``2026-11-26`` or an ISO 8601 time (``2026-11-26T08:00:00Z``);
a time without a zone is UTC. USER is ``alice``, ``alice@DOMAIN`` or
``sip:alice@DOMAIN``. Policy targets are a user (``alice`` or
``user:alice``), ``pool:NAME`` or ``site:NAME``; the global policy is the
``[archive]`` section of conclave.toml.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import click

from conclave.config import Config
from conclave.services.archive import ArchivePolicy, Override, Switches, archive_directory
from conclave.services.archive.export import archive_size, export
from conclave.services.archive.policy import SCOPES
from conclave.services.archive.purge import purge
from conclave.services.archive.segments import ArchiveError
from conclave.services.archive.verify import verify
from conclave.store.archive import ArchivePolicyStore, PolicyRow
from conclave.store.database import Database
from conclave.store.errors import NotFoundError
from conclave.store.users import UserStore

from .common import Group, data_dir_option, fail, load, run_async


class DateParam(click.ParamType[dt.datetime, object]):
    """A date or ISO 8601 time, as an aware UTC datetime."""

    name = "DATE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not a date (2026-11-26) or ISO time", param, ctx)
        return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


T = TypeVar("T")

DATE = DateParam()
SWITCH = click.Choice(["on", "off", "inherit"])


def user_aor(text: str, domain: str) -> str:
    """``alice`` / ``alice@d`` / ``sip:alice@d`` -> ``sip:alice@d`` (domain lower case)."""
    text = text.strip().removeprefix("sip:")
    name, at, host = text.rpartition("@")
    if not at:
        name, host = text, domain
    return f"sip:{name}@{host.lower()}"


def _directory(data_dir: Path) -> tuple[Config, Path]:
    config = load(data_dir)
    return config, archive_directory(data_dir, config)


def _archive(data_dir: Path, action: str) -> tuple[Config, Path]:
    """The config and the archive directory ``action`` works on, or a one-line error
    (archiving off and never on here, or no archive where the config says)."""
    config, directory = _directory(data_dir)
    if directory.is_dir():
        return config, directory
    if not config.archive.enabled:
        raise fail(
            f"archiving is off ([archive] enabled = false in {data_dir / 'conclave.toml'}): "
            f"there is no archive to {action}"
        )
    raise fail(f"no archive at {directory} (the server creates it when it starts)")


@click.group("archive", cls=Group)
def archive_group() -> None:
    """Archived instant messages: verify, export, purge; archiving policies."""


@archive_group.command("verify")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def archive_verify(data_dir: Path, as_json: bool) -> None:
    """Check the hash chain; exit 1 naming the first record changed, removed or reordered."""
    config, directory = _directory(data_dir)
    if not config.archive.enabled:
        _archive(data_dir, "verify")  # no archive while archiving is off: say so
    report = verify(directory)  # archiving on and no archive: it is gone, verify FAILED
    if not config.archive.enabled and not as_json:
        click.echo(f"note: archiving is off; checking the archive left in {directory}", err=True)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@archive_group.command("export")
@data_dir_option
@click.option("--user", "user", help="Only messages sent or received by USER.")
@click.option("--since", type=DATE, help="Only messages archived at or after DATE.")
@click.option("--until", type=DATE, help="Only messages archived before DATE.")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "mbox"]), default="jsonl", show_default=True
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout."
)
def archive_export(
    data_dir: Path,
    user: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    fmt: str,
    output: Path | None,
) -> None:
    """Export messages for eDiscovery, as JSON lines or an mbox file."""
    config, directory = _archive(data_dir, "export")
    aor = user_aor(user, config.server.domain) if user else None
    total = archive_size(directory)
    out: BinaryIO
    if output is None:
        out = sys.stdout.buffer
    else:
        try:
            out = output.open("wb")
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror}") from None
    try:
        with click.progressbar(
            length=total, label="exporting", file=sys.stderr, show_pos=False
        ) as bar:
            count = export(
                directory,
                out,
                "mbox" if fmt == "mbox" else "jsonl",
                user=aor,
                since=since,
                until=until,
                progress=bar.update,
            )
        out.flush()
    finally:
        if output is not None:
            out.close()
    click.echo(f"exported {count} message(s)", err=True)


@archive_group.command("purge")
@data_dir_option
@click.option("--before", type=DATE, required=True, help="Remove records older than DATE.")
def archive_purge(data_dir: Path, before: dt.datetime) -> None:
    """Remove old records by whole segment, sealing a checkpoint so verify still passes."""
    config, directory = _archive(data_dir, "purge")
    try:
        result = purge(directory, before, segment_size=config.archive.segment_size)
    except (ArchiveError, OSError) as exc:
        raise fail(str(exc)) from None
    if not result.segments:
        click.echo("nothing to purge")
        return
    click.echo(
        f"purged {result.records} record(s) in {result.segments} segment(s), "
        f"through record {result.through_seq}"
    )


# -- policies -------------------------------------------------------------------------------


@archive_group.group("policy")
def policy_group() -> None:
    """Archiving policies per user, pool and site (user > pool > site > global)."""


def _target(text: str, domain: str) -> tuple[str, str]:
    """(scope, name) of a policy target."""
    scope, colon, name = text.partition(":")
    if colon and scope in ("user", "pool", "site"):
        if not name.strip():
            raise fail(f"{text!r}: name missing after {scope}:")
        text = name.strip()
    else:
        scope = "user"
    if scope == "user":
        return "user", user_aor(text, domain).removeprefix("sip:")
    return scope, text


def _db_run(data_dir: Path, work: Callable[[Database, Config], Awaitable[T]]) -> T:
    """Run ``await work(db, config)`` on the deployment's database; one-line errors."""
    config = load(data_dir)
    url = config.database_url(data_dir)

    async def go() -> T:
        async with Database(url) as db:
            await db.check_schema()
            return await work(db, config)

    return run_async(go)


async def _check_user(db: Database, scope: str, name: str, domain: str) -> str:
    """``name`` as the policy stores it: for a user, the stored spelling."""
    if scope != "user":
        return name
    user, _, host = name.rpartition("@")
    record = await UserStore(db).get(user, host) if host == domain else None
    if record is None:
        raise NotFoundError(f"no such user: {name}")
    return f"{record.name}@{host}"


def _switch(value: str | None, current: bool | None) -> bool | None:
    if value is None:
        return current
    return None if value == "inherit" else value == "on"


def _show(value: bool | None) -> str:
    return "inherit" if value is None else ("on" if value else "off")


@policy_group.command("set")
@click.argument("target")
@click.argument("state", type=SWITCH, required=False)
@click.option("--internal", type=SWITCH, help="Conversations among local users.")
@click.option("--federated", type=SWITCH, help="Conversations with federated users.")
@data_dir_option
def policy_set(
    target: str,
    state: str | None,
    internal: str | None,
    federated: str | None,
    data_dir: Path,
) -> None:
    """Set TARGET's switches: STATE sets both; --internal/--federated set one each."""
    if state is None and internal is None and federated is None:
        raise fail("give on, off or inherit, or --internal / --federated")

    async def work(db: Database, config: Config) -> PolicyRow | None:
        scope, name = _target(target, config.server.domain)
        name = await _check_user(db, scope, name, config.server.domain)
        store = ArchivePolicyStore(db)
        current = await store.get(scope, name)
        new_internal = _switch(internal or state, current.internal if current else None)
        new_federated = _switch(federated or state, current.federated if current else None)
        return await store.put(scope, name, internal=new_internal, federated=new_federated)

    row = _db_run(data_dir, work)
    if isinstance(row, PolicyRow):
        click.echo(
            f"{row.scope} {row.name}: internal {_show(row.internal)}, "
            f"federated {_show(row.federated)}"
        )
    else:
        click.echo(f"{target}: inherits everything (override removed)")
    click.echo("a running server applies it within a few seconds")


@policy_group.command("clear")
@click.argument("target")
@data_dir_option
def policy_clear(target: str, data_dir: Path) -> None:
    """Remove TARGET's override (it inherits again)."""

    async def work(db: Database, config: Config) -> bool:
        scope, name = _target(target, config.server.domain)
        return await ArchivePolicyStore(db).clear(scope, name)

    if not _db_run(data_dir, work):
        raise fail(f"{target} has no archiving policy of its own")
    click.echo(f"{target}: override removed")


@policy_group.command("show")
@click.argument("user", required=False)
@data_dir_option
def policy_show(user: str | None, data_dir: Path) -> None:
    """List the policies, or show USER's effective policy and where each switch comes from."""

    async def work(db: Database, config: Config) -> tuple[list[PolicyRow], str | None]:
        rows = await ArchivePolicyStore(db).all()
        name = None
        if user is not None:
            scope, name = _target(user, config.server.domain)
            name = await _check_user(db, scope, name, config.server.domain)
        return rows, name

    config = load(data_dir)
    rows, name = _db_run(data_dir, work)
    section = config.archive
    state = "on" if section.enabled else "OFF (nothing is archived)"
    click.echo(f"archiving: {state}; critical mode {'on' if section.critical else 'off'}")
    if name is None:
        click.echo(
            f"global: internal {_show(section.internal)}, federated {_show(section.federated)}"
        )
        for row in rows:
            click.echo(
                f"{row.scope} {row.name}: internal {_show(row.internal)}, "
                f"federated {_show(row.federated)}"
            )
        return
    policy = ArchivePolicy(
        internal=section.internal,
        federated=section.federated,
        site=section.site,
        pool=section.pool,
        overrides=[
            Override(r.scope, r.name, Switches(r.internal, r.federated))
            for r in rows
            if r.scope in SCOPES
        ],
    )
    resolved = policy.resolve(name)
    click.echo(f"{name} (pool {section.pool}, site {section.site}):")
    click.echo(f"  internal:  {_show(resolved.internal)} (from {resolved.internal_from})")
    click.echo(f"  federated: {_show(resolved.federated)} (from {resolved.federated_from})")
