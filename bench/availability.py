"""Scenario 9: availability of Enterprise pools (docs/availability.md).

Measured, not asserted, on this machine, with the deployments the failure tests use
(:mod:`tests.e2e.pool_deployment`, :mod:`tests.e2e.paired_deployment`):

* **member killed**: a client at fe1 sends a message every 100 ms to a user at fe2;
  fe1 is killed with SIGKILL; the client reconnects to fe2 at once (its connection
  was reset: an RFC 5626 client's flow failed) and registers. Reported: seconds from
  the kill to its next message answered 200, per round.
* **pool failed**: the whole of pool ee1 is killed; its partner ee2 fails it over
  automatically after ``failover_after`` seconds of silence; alice signs in at ee2 and
  messages bob. Reported: seconds from the kill to that message's 200, per round.
* **backup lag**: a user is added to ee1's back end (through the store, timed when its
  commit returns), and ee2 logs the copy's arrival. Reported: seconds from the commit to
  the arrival (the data lost in a pool failure is what changed within this long
  before it), and the part of it the copy spent in transit (the rest is the sender's
  wait for its next look at the change counters, at most ``BACKUP_INTERVAL``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from conclave.config import load_config
from conclave.store.database import Database
from conclave.store.users import UserStore
from tests.e2e.edge_deployment import DOMAIN, sign_in
from tests.e2e.paired_deployment import FAILOVER_AFTER, paired_pools
from tests.e2e.pool_deployment import pool_of_two, talk

PACE = 0.1
"""Seconds between the client's messages while fe1 is killed."""


def member_killed(rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        with (
            tempfile.TemporaryDirectory(prefix="conclave-avail-") as root,
            pool_of_two(Path(root)) as pool,
        ):
            bob = pool.client("fe2", "127.0.0.82")
            carol = pool.client("fe1", "127.0.0.81")
            assert sign_in(bob, "bob").status == 200
            assert sign_in(carol, "carol").status == 200
            pool.processes["fe1"].wait_for(
                lambda e: (
                    e.get("event") == "pool registrations changed"
                    and e.get("aor") == f"sip:bob@{DOMAIN}"
                ),
                10,
            )
            assert talk(carol, "carol", bob, "bob", b"ping") == 200
            os.kill(pool.processes["fe1"].pid, signal.SIGKILL)
            killed = time.monotonic()
            while True:
                time.sleep(PACE)
                try:
                    if talk(carol, "carol", bob, "bob", b"ping") == 200:
                        break
                except (OSError, ConnectionError, AssertionError):
                    carol.close()
                    carol = pool.client("fe2", "127.0.0.81")
                    assert sign_in(carol, "carol").status == 200
            times.append(time.monotonic() - killed)
    return times


async def _add_user(data_dir: Path, name: str) -> dt.datetime:
    """Add a user to the pool's back end; the time its commit returned."""
    config = load_config(data_dir)
    async with Database(config.database_url(data_dir)) as db:
        await UserStore(db).add(name, DOMAIN, "Friendly-Password-4711")
        return dt.datetime.now(dt.UTC)


def pool_failed(rounds: int) -> tuple[list[float], list[float], list[float], float]:
    times: list[float] = []
    lags: list[float] = []
    transit: list[float] = []
    failover_after = 0.0
    for _ in range(rounds):
        with (
            tempfile.TemporaryDirectory(prefix="conclave-avail-") as root,
            paired_pools(Path(root)) as pool,
        ):
            failover_after = FAILOVER_AFTER
            fe_b1 = pool.processes["fe-b1"]
            for n in range(5):
                before = {id(e) for e in fe_b1.lines}
                committed = asyncio.run(_add_user(pool.root / "hosts" / "fe-a1", f"friend{n}"))
                got = fe_b1.wait_for(
                    lambda e, old=before: (
                        e.get("event") == "pool backup received" and id(e) not in old
                    ),
                    10,
                )
                arrived = dt.datetime.fromisoformat(got["time"].replace("Z", "+00:00"))
                lags.append((arrived - committed).total_seconds())
                transit.append(float(got["lag_seconds"]))
            bob = pool.client("fe-b1", "127.0.0.83")
            assert sign_in(bob, "bob").status == 200
            os.kill(pool.processes["fe-a1"].pid, signal.SIGKILL)
            killed = time.monotonic()
            fe_b1.wait_for(lambda e: e.get("event") == "pool failover", 60)
            alice = pool.client("fe-b1", "127.0.0.84")
            while sign_in(alice, "alice").status != 200:
                time.sleep(0.1)  # until fe-b1 has reloaded its users
            assert talk(alice, "alice", bob, "bob", b"ping") == 200
            times.append(time.monotonic() - killed)
    return times, lags, transit, failover_after


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "values": [round(v, 3) for v in values],
        "median": round(statistics.median(values), 3) if values else None,
        "max": round(max(values), 3) if values else None,
    }


def run_availability(rounds: int) -> dict[str, Any]:
    """Scenario 9's figures (see the module docstring)."""
    kills = member_killed(rounds)
    failovers, lags, transit, failover_after = pool_failed(rounds)
    return {
        "member_killed_served_again_seconds": _summary(kills),
        "pool_failed_first_message_at_partner_seconds": _summary(failovers),
        "failover_after_seconds": failover_after,
        "backup_lag_seconds": _summary(lags),
        "backup_transit_seconds": _summary(transit),
    }
