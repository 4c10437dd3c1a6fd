"""A running server follows the store's change counters: a change written without a
signal is picked up within a poll, an unchanged store is never re-read, SIGHUP reloads
at once.

The "users reloaded" and "directory reloaded" log events (one per full re-read,
with its trigger) show what the server read.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from conclave.server import USER_POLL_INTERVAL
from conclave.services.presence.rlmi import split_multipart
from conclave.services.presence.service import RELOAD_POLL_INTERVAL
from conclave.store.contacts import ContactStore
from conclave.store.database import Database
from conclave.store.users import UserStore

from .server import ConclaveServer
from .test_presence import DOMAIN, FAST, Peer, Subscription, pidf

DAVE_PASSWORD = "Diver-Deep-246810"
POLL = max(USER_POLL_INTERVAL, RELOAD_POLL_INTERVAL)


def reloaded(what: str, trigger: str) -> Callable[[dict[str, object]], bool]:
    return lambda e: e.get("event") == f"{what} reloaded" and e.get("trigger") == trigger


def _write_without_signal(data_dir: Path) -> None:
    """What a script (or a CLI whose SIGHUP was lost) does: write to the store only."""

    async def work() -> None:
        async with Database(f"sqlite:///{data_dir / 'conclave.db'}") as db:
            await UserStore(db).add("dave", DOMAIN, DAVE_PASSWORD)
            await ContactStore(db).add(f"sip:alice@{DOMAIN}", f"sip:dave@{DOMAIN}", "Team")

    asyncio.run(work())


def test_changes_are_followed_by_counter(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=FAST)
    server.wait_for(reloaded("users", "startup"))
    server.wait_for(reloaded("directory", "startup"))
    alice = Peer(server, "alice")
    accept = "Accept: multipart/related, application/rlmi+xml, application/pidf+xml"
    Subscription(alice, f"sip:alice+contacts@{DOMAIN}", extra=["Supported: eventlist", accept])
    alice.notify()  # the (empty) list

    _write_without_signal(server.data_dir)
    server.wait_for(reloaded("users", "change"), timeout=POLL + 15)
    server.wait_for(reloaded("directory", "change"), timeout=POLL + 15)
    # The new contact reaches alice's list subscription; the new user can sign in.
    full = alice.notify(timeout=15)
    rlmi = split_multipart(full.headers.get("Content-Type") or "", full.body)[0].body.decode()
    assert 'fullState="true"' in rlmi
    assert re.findall(r'<resource uri="([^"]+)"', rlmi) == [f"sip:dave@{DOMAIN}"]
    dave = Peer(server, "dave", DAVE_PASSWORD)
    dave.publish(pidf("dave"))

    # Nothing changes now: over two polls neither table is read again.
    counts = (len(server.events("users reloaded")), len(server.events("directory reloaded")))
    time.sleep(2 * POLL + 1)
    assert (len(server.events("users reloaded")), len(server.events("directory reloaded"))) == (
        counts
    )

    # SIGHUP reloads at once, changed or not.
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for(reloaded("users", "signal"), timeout=10)
    server.wait_for(reloaded("directory", "signal"), timeout=10)
    alice.close()
    dave.close()
