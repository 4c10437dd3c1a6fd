"""``conclave cdr …``: call detail records (registrations, instant messages, calls).

A running server writes CDRs in batches about once a second, so a record
shows up here within ``[cdr] flush_interval`` of the event. USER is
``alice``, ``alice@DOMAIN`` or ``sip:alice@DOMAIN`` and matches either party.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from conclave.store.cdr import KINDS, Cdr, CdrStore
from conclave.store.database import Database

from .archive import DATE, user_aor
from .common import Group, data_dir_option, fail, load, run_async

DEFAULT_LIMIT = 1000


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _line(cdr: Cdr) -> str:
    parties = cdr.caller if cdr.callee is None else f"{cdr.caller} -> {cdr.callee}"
    return (
        f"{cdr.id:>6}  {cdr.kind:<8}  {_when(cdr.started_at)}  {cdr.duration:>9.3f}s  "
        f"{cdr.status:>3}  {parties}  ({cdr.reason})"
    )


@click.group("cdr", cls=Group)
def cdr_group() -> None:
    """Call detail records: who registered, messaged and called whom, and how it ended."""


@cdr_group.command("list")
@data_dir_option
@click.option("--user", help="Only records where USER is a party.")
@click.option("--since", type=DATE, help="Only records that started at or after DATE.")
@click.option("--until", type=DATE, help="Only records that started before DATE.")
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind of record.")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array of records.")
def cdr_list(
    data_dir: Path,
    user: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    kind: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List CDRs, oldest first."""
    config = load(data_dir)
    aor = user_aor(user, config.server.domain) if user else None
    url = config.database_url(data_dir)

    async def go() -> list[Cdr]:
        async with Database(url) as db:
            await db.check_schema()
            return await CdrStore(db).query(
                user=aor, since=since, until=until, kind=kind, limit=limit
            )

    records = run_async(go)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    if not records:
        click.echo("no records")
        return
    click.echo(f"{'id':>6}  {'kind':<8}  {'start (UTC)':<19}  {'duration':>10}  st.  parties")
    for record in records:
        click.echo(_line(record))


@cdr_group.command("show")
@click.argument("key")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cdr_show(key: str, data_dir: Path, as_json: bool) -> None:
    """Show one CDR by its id, or every CDR of a Call-ID."""
    config = load(data_dir)
    url = config.database_url(data_dir)

    async def go() -> list[Cdr]:
        async with Database(url) as db:
            await db.check_schema()
            store = CdrStore(db)
            if key.isdigit():
                found = await store.get(int(key))
                if found is not None:
                    return [found]
            return await store.query(call_id=key)

    records = run_async(go)
    if not records:
        raise fail(f"no CDR with id or Call-ID {key!r}")
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    for record in records:
        for name, value in record.as_dict().items():
            shown = json.dumps(value) if isinstance(value, dict) else value
            click.echo(f"{name:>9}: {'-' if shown is None else shown}")
        click.echo("")
