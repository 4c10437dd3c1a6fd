"""The pool's Redis: queued writes, one event channel, the members' heartbeats.

**Writes** are queued by the request path (:meth:`PoolState.write`) and sent
by :meth:`PoolState.run_writer` in pipelines, with the event that tells the
other members what changed. While Redis is unreachable the queue holds them
(at most :data:`MAX_QUEUED_WRITES`, then the oldest go, with a warning) and
they are sent when it answers again; the members' copies in memory keep
serving meanwhile.

**Events** travel on one channel, ``<prefix>events``, as ``member topic key``
lines: member A changed ``key`` of ``topic`` (``loc`` for an address of
record's registrations, ``pres`` for its presence publications). Every other
member re-reads that key. A member's own events are ignored.

**Resynchronisation.** Each time the event channel is (re)subscribed, the
``on_resync`` callbacks re-read everything: a member that joins loads the
pool's current state instead of waiting for clients to refresh, and one that
lost Redis for a while catches up on what it missed.

**Redis itself** is one server (``redis://``) or a master watched by Redis
Sentinel (``sentinel://host:port,host:port/SERVICE``): after a Sentinel failover
the connections break, the client asks the Sentinels for the new master, and the
event channel's resynchronisation writes every member's own registrations and
publications again, so nothing the old master had not yet copied is lost for good.

**Heartbeats.** Each member sets ``<prefix>member:<name>`` every
:data:`HEARTBEAT_INTERVAL` with a lifetime of :data:`MEMBER_LIFETIME`. A
member whose key is gone has died (kill -9, a lost host): the others drop the
registrations it held (its clients' connections died with it; they
re-register at another member) and say so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

log = structlog.get_logger("conclave.cluster")

HEARTBEAT_INTERVAL = 1.0
"""Seconds between a member's heartbeats."""
MEMBER_LIFETIME = 4.0
"""A member silent this long is taken for dead: long enough for a busy event loop
to miss two heartbeats, short enough that its clients' stale registrations go
well within the 10 s in which they are served again elsewhere (docs/pools.md)."""
REDIS_TIMEOUT = 2.0
"""Seconds any one Redis command may take before the member treats Redis as down
(writes stay queued, reads come from memory)."""
RETRY_INTERVAL = 0.5
"""Seconds between attempts to reach Redis again after it failed."""
MAX_QUEUED_WRITES = 100_000
"""Changes held while Redis is unreachable: about a minute of a busy pool's
registrations; past it the oldest are dropped (their clients' next refresh
writes them again)."""
WRITE_BATCH = 500
"""Changes sent per pipeline."""


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int]:
    """``sentinel://host:port,host:port/SERVICE[/DB]``: the Sentinels, the monitored
    service's name and the database number. Raises ValueError."""
    rest = url.removeprefix("sentinel://")
    hosts, _, path = rest.partition("/")
    service, _, db = path.partition("/")
    sentinels = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Sentinel is host:port, not {entry!r}")
        sentinels.append((host.strip("[]"), int(port)))
    if not service:
        raise ValueError("name the Sentinel service: sentinel://host:port/SERVICE")
    return sentinels, service, int(db or 0)


def connect(url: str) -> aioredis.Redis:
    """A client for ``url``: ``redis://`` (one server) or ``sentinel://`` (the master
    that Redis Sentinel names, found again after a failover)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
    }
    if not url.startswith("sentinel://"):
        return aioredis.Redis.from_url(url, **options)
    sentinels, service, db = parse_sentinel_url(url)
    sentinel = Sentinel(
        sentinels,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
    )
    master: aioredis.Redis = sentinel.master_for(service, db=db, **options)
    return master


Op = Callable[[Any], None]
"""Adds commands to a pipeline."""
Handler = Callable[[str, str], Awaitable[None]]
"""``handler(member, key)`` for an event of another member."""


class PoolState:
    """One member's connection to the pool's Redis (see the module docstring)."""

    def __init__(self, url: str, prefix: str, member: str) -> None:
        self.redis: aioredis.Redis = connect(url)
        self.prefix = prefix
        self.member = member
        self.channel = f"{prefix}events"
        self._queue: deque[tuple[Op, tuple[str, str] | None]] = deque()
        self._wake = asyncio.Event()
        self._handlers: dict[str, Handler] = {}
        self._resync: list[Callable[[], Awaitable[None]]] = []
        self._gone: list[Callable[[str], None]] = []
        self.alive: set[str] = set()
        """Members whose heartbeat is current (this one included once it beat)."""
        self.departed: set[str] = set()
        """Members whose heartbeat lapsed and has not come back."""
        self.connected = False
        """True while the event channel is subscribed."""
        self.synced = asyncio.Event()
        """Set once the first resynchronisation finished."""
        self._lost = False
        self.closing = False
        """Set by a stopping member before it cancels the tasks: redis-py may turn a
        cancellation into a connection error, which must end a loop, not retry."""

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def read_hash(self, key: str) -> dict[str, str]:
        """Every field of hash ``key`` (empty when it does not exist)."""
        fields = await self.redis.hgetall(key)
        return {str(k): str(v) for k, v in fields.items()}

    async def keys(self, pattern: str) -> list[str]:
        """The keys matching ``pattern`` (SCAN, so Redis never blocks on it)."""
        return [str(k) async for k in self.redis.scan_iter(match=pattern, count=500)]

    # -- wiring ------------------------------------------------------------------------------
    def on_event(self, topic: str, handler: Handler) -> None:
        self._handlers[topic] = handler

    def on_resync(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._resync.append(callback)

    def on_member_gone(self, callback: Callable[[str], None]) -> None:
        self._gone.append(callback)

    # -- writes ------------------------------------------------------------------------------
    def write(self, op: Op, event: tuple[str, str] | None = None) -> None:
        """Queue ``op`` (commands for a pipeline) and, once it is written, ``event``
        (topic, key) for the other members. Never waits."""
        self._queue.append((op, event))
        if len(self._queue) > MAX_QUEUED_WRITES:
            self._queue.popleft()
            log.warning("pool state write dropped: queue full", limit=MAX_QUEUED_WRITES)
        self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def flush(self) -> bool:
        """Send every queued write now; False if Redis failed (they stay queued)."""
        while self._queue:
            batch = [self._queue[i] for i in range(min(WRITE_BATCH, len(self._queue)))]
            events = {event for _op, event in batch if event is not None}
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for op, _event in batch:
                        op(pipe)
                    for topic, key in sorted(events):
                        pipe.publish(self.channel, f"{self.member} {topic} {key}")
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("pool state write failed", reason=str(exc), queued=len(self._queue))
                return False
            for _ in batch:
                self._queue.popleft()
        return True

    async def run_writer(self) -> None:
        while not self.closing:
            await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(RETRY_INTERVAL)
                self._wake.set()

    # -- events ------------------------------------------------------------------------------
    async def run_listener(self) -> None:
        """Follow the event channel; after each (re)subscription, resynchronise."""
        while not self.closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self.beat()  # who is alive, before reading what they hold
                for callback in self._resync:
                    await callback()
                if not self.connected:
                    log.info("pool state connected", member=self.member, again=self._lost)
                self.connected = True
                self.synced.set()
                while not self.closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    await self._dispatch(str(message["data"]))
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("pool state lost", reason=str(exc))
                    self._lost = True
                self.connected = False
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(RETRY_INTERVAL)

    async def _dispatch(self, data: str) -> None:
        member, _, rest = data.partition(" ")
        topic, _, key = rest.partition(" ")
        if member == self.member:
            return
        handler = self._handlers.get(topic)
        if handler is None or not key:
            return
        try:
            await handler(member, key)
        except (RedisError, OSError):
            raise
        except Exception:
            log.exception("pool event failed", topic=topic, key=key)

    # -- heartbeats --------------------------------------------------------------------------
    async def beat(self) -> None:
        """One heartbeat: renew ours, read who else is alive, tell of the departed."""
        pattern = self.key("member", "*")
        await self.redis.set(self.key("member", self.member), "1", px=int(MEMBER_LIFETIME * 1000))
        names = {
            name.removeprefix(self.key("member", ""))
            async for name in self.redis.scan_iter(match=pattern, count=100)
        }
        self.departed -= names
        for gone in sorted(self.alive - names):
            self.departed.add(gone)
            log.warning("pool member gone", member=gone)
            for callback in self._gone:
                callback(gone)
        for joined in sorted(names - self.alive - {self.member}):
            log.info("pool member alive", member=joined)
        self.alive = names

    async def run_heartbeat(self) -> None:
        while not self.closing:
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                log.debug("heartbeat failed", reason=str(exc))
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def leave(self) -> None:
        """A graceful stop (the tasks are cancelled): send what is queued, end the
        heartbeat at once."""
        self.closing = True
        with contextlib.suppress(RedisError, OSError):
            await self.flush()
            await self.redis.delete(self.key("member", self.member))
        await self.redis.aclose()


STARTUP_SYNC = 5.0
"""Seconds a starting member waits to load the pool's state before it serves anyway
(Redis down: it catches up when Redis answers)."""


async def start_pool(state: PoolState) -> list[asyncio.Task[None]]:
    """Start a member's pool tasks; return once the pool's state is loaded (or
    :data:`STARTUP_SYNC` passed, with a warning)."""
    tasks = [
        asyncio.create_task(state.run_writer()),
        asyncio.create_task(state.run_listener()),
        asyncio.create_task(state.run_heartbeat()),
    ]
    try:
        await asyncio.wait_for(state.synced.wait(), STARTUP_SYNC)
    except TimeoutError:
        log.warning("pool state not loaded yet; serving from what this member holds")
    return tasks
