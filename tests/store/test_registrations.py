"""RegistrationStore on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from conclave.store import Binding, ConflictError, Database, RegistrationStore, StoreError
from conclave.store.registrations import SQL_IN_CHUNK
from tests.store.conftest import RunWithDb

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
AOR = "sip:alice@example.test"


def binding(contact: str, *, aor: str = AOR, expires: int = 3600, **extra: object) -> Binding:
    values: dict[str, object] = {
        "aor": aor,
        "contact": contact,
        "expires_at": T0 + dt.timedelta(seconds=expires),
        "call_id": "c1@host",
        "cseq": 1,
        "transport": "tls",
        "remote_addr": "192.0.2.1:50000",
        "updated_at": T0,
    }
    values.update(extra)
    return Binding(**values)  # type: ignore[arg-type]


def test_upsert_and_load(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = RegistrationStore(db)
        full = binding(
            "sip:alice@192.0.2.1:50000;transport=tls",
            q=0.5,
            instance_id="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
            reg_id=1,
            connection_id="tls-17",
            path="<sip:edge.example.test;lr>",
            user_agent="Test/1.0",
        )
        await store.upsert(full)
        await store.upsert(binding("sip:alice@198.51.100.7", expires=60))
        assert await store.load_all() == [full, binding("sip:alice@198.51.100.7", expires=60)]

        renewed = dataclasses.replace(full, cseq=2, expires_at=T0 + dt.timedelta(hours=2))
        await store.upsert(renewed)
        loaded = await store.load_for(AOR)
        assert [b.contact for b in loaded] == ["sip:alice@198.51.100.7", full.contact]
        assert loaded[1] == renewed
        assert loaded[1].expires_at.tzinfo is not None

    run_with_db(scenario)


def test_replace_all_for_aor(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = RegistrationStore(db)
        other = binding("sip:bob@192.0.2.9", aor="sip:bob@example.test")
        await store.upsert(other)
        await store.replace_all_for_aor(AOR, [binding("sip:a@1.test"), binding("sip:a@2.test")])
        await store.replace_all_for_aor(AOR, [binding("sip:a@3.test")])
        assert [b.contact for b in await store.load_for(AOR)] == ["sip:a@3.test"]
        await store.replace_all_for_aor(AOR, [])
        assert await store.load_for(AOR) == []
        assert await store.load_all() == [other]
        with pytest.raises(StoreError, match="given for"):
            await store.replace_all_for_aor(AOR, [other])
        with pytest.raises(ConflictError):
            await store.replace_all_for_aor(AOR, [binding("sip:x@y"), binding("sip:x@y")])
        assert await store.load_all() == [other]  # the failed replace changed nothing

    run_with_db(scenario)


def test_replace_many_is_one_transaction(run_with_db: RunWithDb) -> None:
    bob = "sip:bob@example.test"
    carol = "sip:carol@example.test"

    async def scenario(db: Database) -> None:
        store = RegistrationStore(db)
        await store.replace_many(
            {AOR: [binding("sip:a@1.test")], bob: [binding("sip:b@1", aor=bob)]}
        )
        # Many AORs (more than one IN-list chunk) in one call.
        many = {f"sip:u{i}@example.test": [binding(f"sip:u{i}@h", aor=f"sip:u{i}@example.test")]
                for i in range(SQL_IN_CHUNK + 7)}  # fmt: skip
        await store.replace_many(many)
        assert len(await store.load_all()) == 2 + len(many)
        await store.replace_many(
            {AOR: [], bob: [binding("sip:b@2", aor=bob)], **{key: [] for key in many}}
        )
        assert [b.contact for b in await store.load_all()] == ["sip:b@2"]
        with pytest.raises(StoreError, match="given for"):
            await store.replace_many({carol: [binding("sip:c@1", aor=bob)]})
        with pytest.raises(ConflictError):
            await store.replace_many({bob: [], carol: [binding("sip:x@y", aor=carol)] * 2})
        assert [b.contact for b in await store.load_all()] == ["sip:b@2"]  # all or nothing
        await store.replace_many({})

    run_with_db(scenario)


def test_delete_and_purge(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = RegistrationStore(db)
        await store.upsert(binding("sip:short@h", expires=30))
        await store.upsert(binding("sip:long@h", expires=3600))
        await store.upsert(binding("sip:gone@h"))
        assert await store.delete(AOR, "sip:gone@h")
        assert not await store.delete(AOR, "sip:gone@h")
        assert await store.purge_expired(T0 + dt.timedelta(seconds=29)) == 0
        # expires_at == now counts as expired; other time zones compare correctly.
        cet = dt.timezone(dt.timedelta(hours=1))
        assert await store.purge_expired((T0 + dt.timedelta(seconds=30)).astimezone(cet)) == 1
        assert [b.contact for b in await store.load_all()] == ["sip:long@h"]

    run_with_db(scenario)


def test_naive_datetime_refused(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        with pytest.raises(StoreError, match="naive datetime"):
            await RegistrationStore(db).purge_expired(dt.datetime(2026, 1, 1))

    run_with_db(scenario)
