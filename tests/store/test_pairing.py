"""The pairing store: snapshots, the partner's copy, takeover and failback (SQLite and
PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conclave.store import Database
from conclave.store.contacts import ContactStore, PrivacyStore
from conclave.store.errors import ConflictError, StoreError
from conclave.store.generations import DIRECTORY, USERS, GenerationStore
from conclave.store.pairing import MAX_SNAPSHOT_BYTES, PairingStore
from conclave.store.users import UserStore
from tests.store.conftest import RunWithDb

DOMAIN = "example.test"
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


async def _home(db: Database) -> dict[str, object]:
    users = UserStore(db)
    for name in ("alice", "carol"):
        await users.add(name, DOMAIN, "Long-Enough-Password-1")
    await ContactStore(db).add(f"sip:alice@{DOMAIN}", f"sip:carol@{DOMAIN}", "Team")
    await PrivacyStore(db).set(f"sip:alice@{DOMAIN}", f"sip:carol@{DOMAIN}", "colleagues")
    return await PairingStore(db).snapshot()


def test_a_snapshot_carries_users_lists_and_rules(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        snapshot = await _home(db)
        alice = next(u for u in snapshot["users"] if u["name"] == "alice")  # type: ignore[index]
        assert alice["contacts"] == [{"contact": f"sip:carol@{DOMAIN}", "group": "Team"}]
        assert alice["privacy"][0]["level"] == "colleagues"
        assert len(alice["ha1_sha256"]) == 64
        only = await PairingStore(db).snapshot(["carol"])
        assert [u["name"] for u in only["users"]] == ["carol"]

    run_with_db(scenario)


def test_the_newest_copy_wins_and_heartbeats_need_a_copy(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = PairingStore(db)
        assert not await store.heard("ee1", NOW)
        assert await store.heard_at("ee1") is None
        await store.save_backup("ee1", json.dumps({"users": [{"name": "new"}]}), NOW, NOW)
        older = NOW - dt.timedelta(minutes=1)
        await store.save_backup("ee1", json.dumps({"users": [{"name": "old"}]}), older, NOW)
        backup = await store.backup("ee1")
        assert backup is not None and backup.users == ["new"]
        assert await store.heard("ee1", NOW + dt.timedelta(seconds=5))
        again = await store.backup("ee1")
        assert again is not None and again.heard_at == NOW + dt.timedelta(seconds=5)
        assert await store.heard_at("ee1") == NOW + dt.timedelta(seconds=5)
        with pytest.raises(StoreError):
            await store.save_backup("ee1", "x" * (MAX_SNAPSHOT_BYTES + 1), NOW, NOW)

    run_with_db(scenario)


def test_takeover_then_failback_moves_exactly_those_users(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        snapshot = await _home(db)
        # The same database plays the partner: the home pool's users go first.
        users = UserStore(db)
        for name in ("alice", "carol"):
            await users.remove(name, DOMAIN)
        await users.add("bob", DOMAIN, "Long-Enough-Password-2")
        generations = GenerationStore(db)
        before = (await generations.get(USERS), await generations.get(DIRECTORY))
        store = PairingStore(db)
        assert await store.take_over("ee1", snapshot, NOW) == 2
        assert (await generations.get(USERS), await generations.get(DIRECTORY)) > before
        assert ("alice", DOMAIN) in await users.all_credentials()
        lists = await ContactStore(db).list(f"sip:alice@{DOMAIN}")
        assert [(c.contact, c.group) for c in lists] == [(f"sip:carol@{DOMAIN}", "Team")]
        with pytest.raises(ConflictError):
            await store.take_over("ee1", snapshot, NOW)  # once only
        served = await store.failed_over()
        assert sorted(served["ee1"][0]) == ["alice", "carol"]
        current = await store.snapshot(served["ee1"][0])
        assert await store.hand_back("ee1") == ["alice", "carol"]
        names = {name for name, _domain in await users.all_credentials()}
        assert names == {"bob"}
        assert await store.replace_users(current) == 2  # home again (here: the same db)
        assert await store.failed_over() == {}
        with pytest.raises(ConflictError):
            await store.hand_back("ee1")

    run_with_db(scenario)


def test_a_takeover_never_overwrites_a_user_of_the_partner(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        snapshot = await _home(db)  # alice and carol exist here already
        with pytest.raises(ConflictError, match="exist here already"):
            await PairingStore(db).take_over("ee1", snapshot, NOW)
        assert await PairingStore(db).failed_over() == {}

    run_with_db(scenario)
