"""Scenario 4: presence fan-out, one PUBLISH to N watchers (Conclave only).

N watchers (users u00000..) each SUBSCRIBE (RFC 6665, Event: presence, with
the digest challenge) to one presentity over UDP, from one socket of the
load generator, and answer every NOTIFY at once. The presentity then
PUBLISHes (RFC 3903) ``rounds`` times, alternating open and closed; each
round is timed from the PUBLISH (its 407 challenge included, well under a
millisecond here) to the NOTIFY carrying the new state at the *last* of the
N watchers. The load generator is :mod:`bench.sipua` (Python, uvloop): it
shares the 2 cores with the server, so the times are upper bounds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .servers import DOMAIN, HOST, user_name
from .sipp import percentile
from .sipua import (
    Endpoint,
    Message,
    RequestHandler,
    client_context,
    quiet_collector,
    reply,
    source_address,
    tls_endpoint,
    token,
    udp_endpoint,
)

SUBSCRIBE_CONCURRENCY = 50
ROUND_TIMEOUT = 30.0


def pidf(entity: str, basic: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{entity}@{DOMAIN}">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>'
    ).encode()


@dataclass
class FanoutResult:
    watchers: int
    rounds: int = 0
    last_notify_ms: list[float] = field(default_factory=list)
    each_notify_ms: list[float] = field(default_factory=list)
    notifies: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "watchers": self.watchers,
            "rounds": self.rounds,
            "notifies": self.notifies,
            "p50_ms": round(percentile(self.last_notify_ms, 50), 2),
            "p99_ms": round(percentile(self.last_notify_ms, 99), 2),
            "rounds_ms": [round(ms, 1) for ms in self.last_notify_ms],
            "each_notify_p50_ms": round(percentile(self.each_notify_ms, 50), 2),
            "each_notify_p99_ms": round(percentile(self.each_notify_ms, 99), 2),
            "errors": self.errors[:5],
            "error_count": len(self.errors),
        }


class _Watchers:
    """Answers NOTIFYs and records when each watcher learnt the awaited state."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.expect = b""
        self.started = 0.0
        self.seen: dict[str, float] = {}
        self.done = asyncio.Event()
        self.notifies = 0

    def arm(self, expect: bytes) -> None:
        self.expect, self.seen = expect, {}
        self.done.clear()
        self.started = time.perf_counter()

    def on_request(self, msg: Message) -> bytes | None:
        if msg.method != "NOTIFY":
            return reply(msg, 405, "Method Not Allowed") if msg.method != "ACK" else None
        self.notifies += 1
        call_id = msg.get("call-id")
        if self.expect and self.expect in msg.body and call_id not in self.seen:
            self.seen[call_id] = time.perf_counter()
            if len(self.seen) >= self.n:
                self.done.set()
        return reply(msg)


async def _subscribe(ep: Endpoint, watcher: str, presentity: str) -> Message:
    uri = f"sip:{presentity}@{DOMAIN}"
    headers = [("Contact", ep.contact(watcher)), ("Event", "presence"),
               ("Accept", "application/pidf+xml"), ("Expires", "3600")]  # fmt: skip
    return await ep.request("SUBSCRIBE", uri, watcher, headers, call_id=token(), cseq=1,
                            from_tag=token())  # fmt: skip


async def fanout(
    server_port: int, presentity: str, n: int, rounds: int, *, ca_file: str | None = None
) -> FanoutResult:
    """Subscribe ``n`` watchers to ``presentity``, then time ``rounds`` PUBLISHes.

    UDP (``ca_file`` None): every watcher shares one socket. TLS: each watcher
    has its own connection, as a real client does.
    """
    result = FanoutResult(n)
    watchers = _Watchers(n)
    server = (HOST, server_port)
    context = client_context(ca_file) if ca_file else None
    no_requests: RequestHandler = lambda m: reply(m, 405, "Method Not Allowed")  # noqa: E731
    shared = None if context else await udp_endpoint(server, watchers.on_request)
    if context is None:
        pub_ep = await udp_endpoint(server, no_requests)
    else:
        pub_ep = await tls_endpoint(server, context, no_requests)
    gate = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)
    endpoints: list[Endpoint] = []

    async def one(i: int) -> None:
        async with gate:
            try:
                if shared is not None:
                    ep = shared
                else:
                    assert context is not None
                    ep = await tls_endpoint(server, context, watchers.on_request, source_address(i))
                    endpoints.append(ep)
                answer = await _subscribe(ep, user_name(i), presentity)
            except (TimeoutError, OSError) as exc:
                result.errors.append(f"SUBSCRIBE {user_name(i)}: {exc!r}")
                return
            if answer.status != 200 and answer.status != 202:
                result.errors.append(f"SUBSCRIBE {user_name(i)}: {answer.first}")

    await asyncio.gather(*(one(i) for i in range(n)))
    if result.errors:
        return result
    with quiet_collector():
        await _rounds(result, watchers, pub_ep, presentity, n, rounds)
    result.notifies = watchers.notifies
    for ep in [*endpoints, pub_ep]:
        ep.close()
    if shared is not None:
        shared.close()
    return result


async def _rounds(
    result: FanoutResult, watchers: _Watchers, pub_ep: Endpoint, presentity: str, n: int,
    rounds: int,
) -> None:  # fmt: skip
    """``rounds`` PUBLISHes, each timed to the NOTIFY at the last of ``n`` watchers."""
    etag, call_id, from_tag, cseq = "", token(), token(), 1
    for k in range(rounds):
        basic = "open" if k % 2 == 0 else "closed"
        watchers.arm(f"<basic>{basic}</basic>".encode())
        headers = [("Event", "presence"), ("Expires", "3600"),
                   ("Content-Type", "application/pidf+xml")]  # fmt: skip
        if etag:
            headers.append(("SIP-If-Match", etag))
        uri = f"sip:{presentity}@{DOMAIN}"
        try:
            answer = await pub_ep.request("PUBLISH", uri, presentity, headers,
                                          pidf(presentity, basic), call_id=call_id,
                                          cseq=cseq, from_tag=from_tag)  # fmt: skip
        except TimeoutError:
            result.errors.append("PUBLISH timed out")
            break
        cseq += 2
        if answer.status != 200:
            result.errors.append(f"PUBLISH: {answer.first}")
            break
        etag = answer.get("sip-etag")
        try:
            await asyncio.wait_for(watchers.done.wait(), ROUND_TIMEOUT)
        except TimeoutError:
            result.errors.append(f"round {k}: {len(watchers.seen)}/{n} NOTIFYs in time")
            break
        result.rounds += 1
        result.last_notify_ms.append((max(watchers.seen.values()) - watchers.started) * 1000)
        result.each_notify_ms += [(t - watchers.started) * 1000 for t in watchers.seen.values()]
