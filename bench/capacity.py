"""Scenario 5: capacity under Lync's user model, compressed in time (Conclave only).

Every simulated user (u00000, u00001, ...) has its own TLS connection (from
127.1.x.y: Conclave admits 64 connections per source IP), registers, then
subscribes to its contact list (``sip:USER+contacts@DOMAIN``, RFC 4662;
:data:`CONTACTS_PER_USER` contacts each) and answers every NOTIFY and
MESSAGE. Then, for ``steady_seconds``, users act at Lync-model rates
multiplied by ``compression``: :data:`PUBLISH_PER_HOUR` presence changes,
:data:`IM_PER_HOUR` pager MESSAGEs to a contact, :data:`REFRESH_PER_HOUR`
re-registrations. A user count *passes* when sign-in and the steady phase
have no error and the steady phase's p99 response time is under
:data:`P99_LIMIT_MS`.

Memory per user is the server's VmRSS growth over the baseline, divided by
the user count: once after REGISTER only (idle registered TLS connection)
and once after the list subscription. The load generator is Python
(uvloop) on the same 2 cores, so response times include its own delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from .presence import pidf
from .procstat import status_kib
from .servers import DOMAIN, HOST, ServerProcess, user_name
from .sipp import percentile
from .sipua import (
    Endpoint,
    Message,
    client_context,
    quiet_collector,
    reply,
    source_address,
    tls_endpoint,
    token,
    udp_endpoint,
)

CONTACTS_PER_USER = 40
PUBLISH_PER_HOUR = 4.0
IM_PER_HOUR = 6.0
REFRESH_PER_HOUR = 2.0
"""REGISTER expires 3600 s; clients refresh at half-life."""
P99_LIMIT_MS = 100.0
PROBE_INTERVAL = 0.05
"""An OPTIONS ping to the server every 50 ms during the steady phase shows
when its event loop stalls (a reply later than P99_LIMIT_MS)."""
SIGNIN_CONCURRENCY = 64
FD_LIMIT = 65536


def raise_fd_limit() -> None:
    """Lift RLIMIT_NOFILE (root may) so 20,000 connections fit, for us and the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, FD_LIMIT)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def add_contacts(data_dir: Path, users: int, per_user: int = CONTACTS_PER_USER) -> None:
    """Give user i the next ``per_user`` users as contacts (bulk insert, one transaction)."""
    from conclave.config import load_config
    from conclave.store.database import Database
    from conclave.store.models import ContactListItem, User

    per_user = min(per_user, users - 1)  # never oneself, never twice
    config = load_config(data_dir)
    async with Database(config.database_url(data_dir)) as db, db.transaction() as session:
        ids = dict((await session.execute(select(User.name, User.id))).tuples().all())
        rows = [
            {"owner_id": ids[user_name(i)],
             "contact": f"sip:{user_name((i + k) % users)}@{DOMAIN}", "group_name": "Contacts"}
            for i in range(users) for k in range(1, per_user + 1)
        ]  # fmt: skip
        for start in range(0, len(rows), 10_000):
            await session.execute(insert(ContactListItem), rows[start : start + 10_000])


@dataclass
class CapacityRun:
    users: int
    signed_in: int = 0
    subscribed: int = 0
    signin_seconds: float = 0.0
    idle_kib_per_connection: float = 0.0
    kib_per_user: float = 0.0
    steady_requests: int = 0
    steady_rate: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    probe: list[tuple[float, float]] = field(default_factory=list)
    """(seconds into the steady phase, OPTIONS round trip in ms) every PROBE_INTERVAL."""
    errors: list[str] = field(default_factory=list)
    notifies: int = 0
    messages_received: int = 0
    cpu_seconds: float = 0.0
    peak_memory_kib: int = 0

    @property
    def passed(self) -> bool:
        return (not self.errors and self.signed_in == self.users
                and percentile(self.latencies_ms, 99) < P99_LIMIT_MS)  # fmt: skip

    def stalls(self) -> dict[str, Any]:
        """The event-loop stalls the OPTIONS probe saw: how many, how long, how often."""
        slow = [(t, ms) for t, ms in self.probe if ms > P99_LIMIT_MS]
        starts = [t for i, (t, _) in enumerate(slow) if i == 0 or t - slow[i - 1][0] > 1.0]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        return {
            "probes": len(self.probe),
            "probes_over_100ms": len(slow),
            "max_ms": round(max((ms for _, ms in self.probe), default=0.0), 1),
            "stall_episodes": len(starts),
            "median_seconds_between_stalls": round(percentile(gaps, 50), 2) if gaps else None,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "users": self.users, "signed_in": self.signed_in, "subscribed": self.subscribed,
            "signin_seconds": round(self.signin_seconds, 1),
            "idle_kib_per_connection": round(self.idle_kib_per_connection, 1),
            "kib_per_user": round(self.kib_per_user, 1),
            "steady_requests": self.steady_requests, "steady_rate": round(self.steady_rate, 1),
            "p50_ms": round(percentile(self.latencies_ms, 50), 2),
            "p99_ms": round(percentile(self.latencies_ms, 99), 2),
            "notifies": self.notifies, "messages_received": self.messages_received,
            "cpu_seconds": round(self.cpu_seconds, 2), "peak_memory_kib": self.peak_memory_kib,
            "error_count": len(self.errors), "errors": self.errors[:5], "passed": self.passed,
            "loop_stalls": self.stalls(),
        }  # fmt: skip


class _User:
    def __init__(self, index: int) -> None:
        self.index, self.name = index, user_name(index)
        self.ep: Endpoint | None = None
        self.reg_call_id, self.tag, self.cseq = token(), token(), 1
        self.etag = ""
        self.pub_call_id, self.pub_cseq = token(), 1
        self.busy = asyncio.Lock()
        """A client does one thing at a time: no overlapping PUBLISH (etag) or REGISTER."""


async def _timed(run: CapacityRun, what: str, coro: Any, record: bool) -> Message | None:
    started = time.perf_counter()
    try:
        answer: Message = await coro
    except (TimeoutError, OSError) as exc:
        run.errors.append(f"{what}: {exc!r}")
        return None
    if record:
        run.latencies_ms.append((time.perf_counter() - started) * 1000)
    if not 200 <= answer.status < 300:
        run.errors.append(f"{what}: {answer.first}")
        return None
    return answer


async def _register(run: CapacityRun, user: _User, record: bool) -> bool:
    assert user.ep is not None
    uri = f"sip:{DOMAIN}"
    headers = [("Contact", user.ep.contact(user.name)), ("Expires", "3600")]
    coro = user.ep.request(
        "REGISTER",
        uri,
        user.name,
        headers,
        call_id=user.reg_call_id,
        cseq=user.cseq,
        from_tag=user.tag,
        to=f"<sip:{user.name}@{DOMAIN}>",
    )
    user.cseq += 2
    return await _timed(run, f"REGISTER {user.name}", coro, record) is not None  # fmt: skip


async def _publish(run: CapacityRun, user: _User, rng: random.Random) -> None:
    assert user.ep is not None
    uri = f"sip:{user.name}@{DOMAIN}"
    headers = [("Event", "presence"), ("Expires", "3600"),
               ("Content-Type", "application/pidf+xml")]  # fmt: skip
    if user.etag:
        headers.append(("SIP-If-Match", user.etag))
    body = pidf(user.name, rng.choice(("open", "closed")))
    coro = user.ep.request("PUBLISH", uri, user.name, headers, body, call_id=user.pub_call_id,
                           cseq=user.pub_cseq, from_tag=user.tag)  # fmt: skip
    user.pub_cseq += 2
    answer = await _timed(run, f"PUBLISH {user.name}", coro, True)
    if answer is not None:
        user.etag = answer.get("sip-etag")


async def _message(run: CapacityRun, user: _User, rng: random.Random, online: int) -> None:
    assert user.ep is not None
    step = rng.randint(1, max(1, min(CONTACTS_PER_USER, online - 1)))
    peer = user_name((user.index + step) % online)
    headers = [("Content-Type", "text/plain")]
    coro = user.ep.request(
        "MESSAGE",
        f"sip:{peer}@{DOMAIN}",
        user.name,
        headers,
        b"capacity benchmark",
        call_id=token(),
        cseq=1,
        from_tag=token(),
    )
    await _timed(run, f"MESSAGE {user.name}", coro, True)  # fmt: skip


async def _probe(run: CapacityRun, server: ServerProcess, end: float) -> None:
    """OPTIONS every PROBE_INTERVAL over UDP; records each round trip."""
    ep = await udp_endpoint((HOST, server.ports["udp"]), lambda m: None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while loop.time() < end:
            sent = loop.time()
            with contextlib.suppress(TimeoutError):  # recorded as the full wait
                await ep.request("OPTIONS", f"sip:{DOMAIN}", user_name(0), [], call_id=token(),
                                 cseq=1, from_tag=token())  # fmt: skip
            now = loop.time()
            run.probe.append((round(sent - start, 3), round((now - sent) * 1000, 2)))
            await asyncio.sleep(max(0.0, PROBE_INTERVAL - (now - sent)))
    finally:
        ep.close()


async def _act(run: CapacityRun, user: _User, kind: str, rng: random.Random, n: int) -> None:
    async with user.busy:
        if kind == "publish":
            await _publish(run, user, rng)
        elif kind == "message":
            await _message(run, user, rng, n)
        else:
            await _register(run, user, record=True)


async def run_capacity(
    server: ServerProcess, n: int, ca_file: str, *, compression: float, steady_seconds: float,
    seed: int = 8,
) -> CapacityRun:  # fmt: skip
    """Sign ``n`` users in over TLS, measure memory, then run the steady phase."""
    run = CapacityRun(n)
    rng = random.Random(seed)
    context = client_context(ca_file)
    target = (HOST, server.ports["tls"])
    users = [_User(i) for i in range(n)]

    def on_request(msg: Message) -> bytes | None:
        if msg.method == "NOTIFY":
            run.notifies += 1
        elif msg.method == "MESSAGE":
            run.messages_received += 1
        elif msg.method == "ACK":
            return None
        return reply(msg)

    baseline = status_kib(server.pid, "VmRSS")
    meter = server.meter()
    meter.start()
    gate = asyncio.Semaphore(SIGNIN_CONCURRENCY)
    started = time.perf_counter()

    async def sign_in(user: _User) -> None:
        async with gate:
            try:
                user.ep = await tls_endpoint(
                    target, context, on_request, source_address(user.index)
                )
            except (OSError, TimeoutError) as exc:
                run.errors.append(f"connect {user.name}: {exc!r}")
                return
            if await _register(run, user, record=False):
                run.signed_in += 1

    await asyncio.gather(*(sign_in(u) for u in users))
    run.signin_seconds = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let the registrar's write-behind run before measuring
    run.idle_kib_per_connection = (status_kib(server.pid, "VmRSS") - baseline) / n

    async def subscribe(user: _User) -> None:
        async with gate:
            if user.ep is None:
                return
            uri = f"sip:{user.name}+contacts@{DOMAIN}"
            headers = [
                ("Contact", user.ep.contact(user.name)),
                ("Event", "presence"),
                ("Supported", "eventlist"),
                ("Expires", "3600"),
                ("Accept", "application/pidf+xml, application/rlmi+xml, multipart/related"),
            ]
            coro = user.ep.request("SUBSCRIBE", uri, user.name, headers, call_id=token(),
                                   cseq=1, from_tag=token())  # fmt: skip
            if await _timed(run, f"SUBSCRIBE {user.name}", coro, False) is not None:
                run.subscribed += 1

    await asyncio.gather(*(subscribe(u) for u in users))
    await asyncio.sleep(1.0)
    run.kib_per_user = (status_kib(server.pid, "VmRSS") - baseline) / n
    if run.errors:
        usage = meter.stop()
        run.cpu_seconds, run.peak_memory_kib = usage.cpu_seconds, usage.peak_kib
        return run
    # The generator holds 20,000 connections' worth of Python objects too: its own
    # full garbage collections would stall it for a few hundred milliseconds and
    # show up as server latency. Treat its heap as the server treats its own.
    with quiet_collector():
        await _steady(run, server, users, rng, compression=compression, seconds=steady_seconds)
    usage = meter.stop()
    run.cpu_seconds, run.peak_memory_kib = usage.cpu_seconds, usage.peak_kib
    for user in users:
        if user.ep is not None:
            if user.ep.closed:
                run.errors.append(f"{user.name}: connection closed by the server")
            user.ep.close()
    return run


async def _steady(
    run: CapacityRun, server: ServerProcess, users: list[_User], rng: random.Random, *,
    compression: float, seconds: float,
) -> None:  # fmt: skip
    """The user model at real-time rates (times ``compression``) for ``seconds``."""
    n, steady_seconds = len(users), seconds
    per_second = n * compression / 3600
    actions = ((PUBLISH_PER_HOUR, "publish"), (IM_PER_HOUR, "message"),
               (REFRESH_PER_HOUR, "register"))  # fmt: skip
    total_rate = per_second * sum(rate for rate, _ in actions)
    tasks: list[asyncio.Task[Any]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + steady_seconds
    next_at = loop.time()
    probe_task = loop.create_task(_probe(run, server, end))
    while next_at < end:
        next_at += rng.expovariate(total_rate)
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        user = users[rng.randrange(n)]
        kind = rng.choices([k for _, k in actions], weights=[r for r, _ in actions])[0]
        tasks.append(loop.create_task(_act(run, user, kind, rng, n)))
    await asyncio.gather(*tasks, probe_task)
    run.steady_requests = len(tasks)
    run.steady_rate = len(tasks) / steady_seconds
