"""``conclave pool …``: paired pools' status, failover and failback (docs/pools.md).

Each command reads the topology for the pools, their partners and their back ends,
and works on the databases directly (the running Front Ends follow the change
counters within seconds):

* ``status`` — each Front End pool's members, partner, the age of the copy it holds
  of its partner, its partner's last heartbeat, and whose users it serves;
* ``failover POOL`` — POOL failed: its partner takes POOL's users over from the copy
  it holds (contact lists and privacy rules included);
* ``failback POOL`` — POOL is back: its users' current data (whatever they changed
  while away) is written home, and the partner forgets them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from conclave.store.database import Database
from conclave.store.pairing import PairingStore
from conclave.topology.document import TopologyError, load_topology
from conclave.topology.layout import host_dir
from conclave.topology.model import Pool, Topology

from .common import Group, fail, notify_server, run_async


def _topology(path: Path) -> Topology:
    try:
        return load_topology(path)
    except TopologyError as exc:
        raise fail(str(exc).splitlines()[0]) from None


def _frontend_pools(topology: Topology) -> dict[str, Pool]:
    return {
        name: pool
        for name, pool in topology.pools.items()
        if pool.database and any("frontend" in m.roles for m in pool.members)
    }


def _paired(topology: Topology, name: str) -> tuple[Pool, str, Pool]:
    pools = _frontend_pools(topology)
    pool = pools.get(name)
    if pool is None:
        raise fail(f"no Enterprise Front End pool named {name!r} in the topology")
    partner = pools.get(pool.paired_with) if pool.paired_with else None
    if partner is None:
        raise fail(f"pool {name} is not paired with an Enterprise Front End pool")
    return pool, pool.paired_with, partner


def _tell(topology_path: Path, topology: Topology, pool: Pool) -> list[str]:
    """SIGHUP the pool's Front Ends that run on this machine, so they reload users at
    once (the others follow the change counters within seconds)."""
    told = []
    for member in pool.members:
        if "frontend" in member.roles and notify_server(
            host_dir(topology_path, topology, member.name)
        ):
            told.append(member.name)
    return told


def _ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "never"
    return f"{(now - when).total_seconds():.1f} s ago"


topology_option = click.option(
    "--topology",
    "topology_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The topology document.",
)


@click.group("pool", cls=Group)
def pool_group() -> None:
    """Enterprise pools: pairing status, failover and failback."""


@pool_group.command("status")
@topology_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
def status_command(topology_path: Path, as_json: bool) -> None:
    """Members, partner, the partner's copy and heartbeat, failover state."""
    topology = _topology(topology_path)
    pools = _frontend_pools(topology)

    async def gather() -> list[dict[str, Any]]:
        now = dt.datetime.now(dt.UTC)
        found = []
        for name, pool in pools.items():
            entry: dict[str, Any] = {
                "pool": name, "site": pool.site, "members": [m.fqdn for m in pool.members],
                "partner": pool.paired_with or None, "failover": pool.failover,
            }  # fmt: skip
            async with Database(pool.database) as db:
                store = PairingStore(db)
                backup = await store.backup(pool.paired_with) if pool.paired_with else None
                serving = await store.failed_over()
            if backup is not None:
                entry["partner_copy"] = {
                    "users": len(backup.users),
                    "changed_at": backup.changed_at.isoformat(),
                    "replication_lag_seconds": round(
                        (backup.received_at - backup.changed_at).total_seconds(), 3
                    ),
                    "heartbeat": _ago(backup.heard_at, now),
                }
            entry["serving_for"] = {p: {"users": len(u), "since": s.isoformat()}
                                    for p, (u, s) in serving.items()}  # fmt: skip
            found.append(entry)
        return found

    entries = run_async(gather)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for entry in entries:
        click.echo(f"pool {entry['pool']} (site {entry['site']}): {', '.join(entry['members'])}")
        if entry["partner"] is None:
            click.echo("  not paired")
        else:
            copy = entry.get("partner_copy")
            held = (
                f"copy of {copy['users']} users, replication lag {copy['replication_lag_seconds']}"
                f" s, partner heartbeat {copy['heartbeat']}"
                if copy
                else "no copy of the partner yet"
            )
            click.echo(f"  paired with {entry['partner']} ({entry['failover']} failover): {held}")
        for partner, served in entry["serving_for"].items():
            click.echo(
                f"  serving {served['users']} users of {partner} since {served['since']} "
                f"(failed over; `conclave pool failback {partner}` moves them home)"
            )


@pool_group.command("failover")
@topology_option
@click.argument("pool_name", metavar="POOL")
def failover_command(topology_path: Path, pool_name: str) -> None:
    """POOL has failed: its partner serves POOL's users from the copy it holds."""
    topology = _topology(topology_path)
    _pool, partner_name, partner = _paired(topology, pool_name)

    async def act() -> int:
        now = dt.datetime.now(dt.UTC)
        async with Database(partner.database) as db:
            store = PairingStore(db)
            backup = await store.backup(pool_name)
            if backup is None:
                raise fail(f"{partner_name} holds no copy of {pool_name}: nothing to fail over")
            return await store.take_over(pool_name, backup.snapshot, now)

    taken = run_async(act)
    _tell(topology_path, topology, partner)
    click.echo(
        f"pool {pool_name} failed over to {partner_name}: {taken} users served there now "
        f"(point {pool_name}'s clients at {partner.fqdn or partner_name}: DNS or a redirect)"
    )


@pool_group.command("failback")
@topology_option
@click.argument("pool_name", metavar="POOL")
def failback_command(topology_path: Path, pool_name: str) -> None:
    """POOL is back: move its users home with what they changed meanwhile."""
    topology = _topology(topology_path)
    pool, partner_name, partner = _paired(topology, pool_name)

    async def act() -> int:
        async with Database(partner.database) as there, Database(pool.database) as home:
            away = PairingStore(there)
            serving = await away.failed_over()
            if pool_name not in serving:
                raise fail(f"pool {pool_name} has not failed over to {partner_name}")
            names, _since = serving[pool_name]
            current = await away.snapshot(names)
            moved = await PairingStore(home).replace_users(current)
            await away.hand_back(pool_name)
            return moved

    moved = run_async(act)
    _tell(topology_path, topology, partner)
    _tell(topology_path, topology, pool)
    click.echo(f"pool {pool_name} failed back: {moved} users served at home again")
