"""The pool's shared state against a real Redis: two members in one process.

Each test uses its own key prefix, so runs never see each other's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis

from conclave.cluster.locations import PoolLocationService
from conclave.cluster.presence import PoolPresenceState
from conclave.cluster.state import PoolState, start_pool
from conclave.cluster.tokens import MemberTokens
from conclave.services.location import ContactUpdate, RegisterChange
from conclave.services.presence.model import Availability, DeviceState
from conclave.services.presence.state import Publication
from conclave.sip.flow import Flow
from conclave.sip.uri import SipURI, parse_uri

from .redis_servers import RedisServer

REDIS_URL = os.environ.get("CONCLAVE_TEST_REDIS", "redis://127.0.0.1:6379/0")
AOR = "sip:alice@example.test"
NOW = 1_900_000_000.0


@pytest.fixture(scope="module", autouse=True)
def _redis_up() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except (redis.RedisError, OSError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} not usable: {exc}")
        pytest.skip(f"Redis not usable: {exc}")  # outside CI only


class Member:
    def __init__(self, name: str, prefix: str, url: str = REDIS_URL) -> None:
        self.name = name
        self.state = PoolState(url, prefix, name)
        self.tokens = MemberTokens()
        self.location = PoolLocationService(self.state, self.tokens, self.hop)
        self.presence = PoolPresenceState(self.state)
        self.changes: list[str] = []
        self.presence.follow(lambda aor, added, removed: self.changes.append(aor))

    @staticmethod
    def hop(member: str, token: str) -> str | None:
        return f"<sip:{token}@{member}:5061;transport=tls;lr>" if member.endswith(".pool") else None


@asynccontextmanager
async def members(*names: str, url: str = REDIS_URL) -> AsyncIterator[list[Member]]:
    prefix = f"conclave-test:{uuid.uuid4().hex[:8]}:"
    started = [Member(name, prefix, url) for name in names]
    tasks = []
    try:
        for member in started:
            tasks += await start_pool(member.state)
        yield started
    finally:
        for member in started:
            member.state.closing = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for member in started:
            await member.state.leave()
        cleanup = redis.asyncio.Redis.from_url(url, socket_timeout=2)
        with contextlib.suppress(redis.RedisError, OSError):
            keys = [k async for k in cleanup.scan_iter(match=prefix + "*")]
            if keys:
                await cleanup.delete(*keys)
        await cleanup.aclose()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (on the event loop, which delivers the events) until ``check`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def register(location: PoolLocationService, port: int, *, expires: int = 600) -> Flow:
    flow = Flow("tls", ("127.0.0.1", port), ("127.0.4.1", 5061), conn_id=port)
    uri = parse_uri(f"sip:alice@127.0.0.1:{port};transport=tls")
    assert isinstance(uri, SipURI)
    change = RegisterChange(
        call_id=f"c{port}", cseq=1, flow=flow,
        updates=(ContactUpdate(uri=uri, contact=f"<{uri}>", expires=expires),),
    )  # fmt: skip
    location.apply(AOR, change, NOW)
    return flow


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_registration_at_one_member_is_reachable_through_it_from_the_other() -> None:
    async def scenario() -> None:
        async with members("a.pool", "b.pool") as (a, b):
            flow = register(a.location, 40001)
            await until(lambda: bool(b.location.lookup(AOR, NOW)))
            (seen,) = b.location.lookup(AOR, NOW)
            assert seen.flow is None and b.location.member_of(seen) == "a.pool"
            token = seen.path[0].removeprefix("<sip:").partition("@")[0]
            assert a.tokens.flow(token) == flow  # a names its own connection
            assert b.tokens.flow(token) is None  # nobody else's token
            assert a.location.remove_flow(flow) == 1  # the client's connection closed
            await until(lambda: not b.location.lookup(AOR, NOW))

    run(scenario)


def test_a_member_that_joins_loads_what_the_pool_holds() -> None:
    async def scenario() -> None:
        async with members("a.pool") as (a,):
            register(a.location, 40002)
            await until(lambda: a.state.queued == 0)
            late = Member("c.pool", a.state.prefix)
            tasks = await start_pool(late.state)
            try:
                assert [c.uri.port for c in late.location.lookup(AOR, NOW)] == [40002]
            finally:
                late.state.closing = True
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await late.state.leave()

    run(scenario)


def test_a_departed_member_s_bindings_are_dropped() -> None:
    async def scenario() -> None:
        async with members("a.pool", "b.pool") as (a, b):
            register(a.location, 40003)
            await until(lambda: bool(b.location.lookup(AOR, NOW)))
            b.location.member_gone("a.pool")
            assert not b.location.lookup(AOR, NOW)
            await until(lambda: b.state.queued == 0)
            fields = await b.state.read_hash(b.state.key("reg", AOR))
            assert fields == {}

    run(scenario)


def test_an_unknown_member_in_the_state_is_never_a_route() -> None:
    async def scenario() -> None:
        async with members("a.pool", "b.pool") as (a, b):
            register(a.location, 40004)
            await until(lambda: a.state.queued == 0)
            key = a.state.key("reg", AOR)
            value = (await a.state.read_hash(key)).popitem()[1]
            await a.state.redis.hset(key, "u:evil", value.replace('"a.pool"', '"evil.example"'))
            await a.state.redis.publish(a.state.channel, f"a.pool loc {AOR}")
            register(a.location, 40005)  # its event comes after the poisoned one's
            await until(lambda: len(b.location.lookup(AOR, NOW)) >= 2)
            seen = b.location.lookup(AOR, NOW)
            assert sorted(c.uri.port or 0 for c in seen) == [40004, 40005]
            assert all(b.location.member_of(c) == "a.pool" for c in seen)

    run(scenario)


def test_publications_cross_and_expire_pool_wide() -> None:
    async def scenario() -> None:
        async with members("a.pool", "b.pool") as (a, b):
            state = DeviceState(Availability.BUSY, note="in the lab", published=1)
            a.presence.put_publication(Publication(AOR, "etag1", state, NOW + 60, NOW))
            await until(lambda: bool(b.presence.publications(AOR)))
            (pub,) = b.presence.publications(AOR)
            assert (pub.etag, pub.state, pub.expires_at) == ("etag1", state, NOW + 60)
            assert b.changes == [AOR]
            b.presence.remove_publication("etag1")  # b's timer fired first
            await until(lambda: not a.presence.publications(AOR))

    run(scenario)


def test_a_forged_or_foreign_token_names_nothing() -> None:
    tokens = MemberTokens(b"k" * 32)
    flow = Flow("tls", ("192.0.2.1", 5061), ("192.0.2.2", 5061), conn_id=7)
    token = tokens.token(flow)
    assert token is not None and tokens.flow(token) == flow
    assert MemberTokens(b"j" * 32).flow(token) is None
    text, _, mac = token.rpartition(".")
    assert tokens.flow(f"{text}.{'0' * len(mac)}") is None
    assert tokens.flow("") is None and tokens.flow("no-dot") is None


def test_a_redis_restart_loses_nothing_a_member_holds(tmp_path: Path) -> None:
    """Redis (which here keeps nothing on disk) is killed and started again empty: the
    members write what they hold again, including what changed while it was down."""
    server = RedisServer(tmp_path).start()

    async def scenario() -> None:
        async with members("a.pool", "b.pool", url=server.url) as (a, b):
            register(a.location, 40010)
            await until(lambda: len(b.location.lookup(AOR, NOW)) == 1)
            server.kill()
            register(a.location, 40011)  # queued while Redis is down
            await until(lambda: not a.state.connected)
            server.start()
            await until(lambda: len(b.location.lookup(AOR, NOW)) == 2, timeout=15)

    try:
        run(scenario)
    finally:
        server.kill()
