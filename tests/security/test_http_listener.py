"""An attacker against Conclave's HTTP listeners (:mod:`conclave.web.http`).

uvicorn brings the HTTP/1.1 protocol; the listener around it must still hold
against what a stranger can send: a request head dripped one byte at a time
(slowloris), a TLS client that never finishes its handshake, a head too large
to buffer, a forged ``X-Forwarded-For``, a request that makes the application
fail, and requests pipelined behind a refusal.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conclave.pki import tls as pki_tls
from conclave.transport.guard import SourceGuard
from conclave.web.http import HttpLimits, HttpListener
from tests.ops.conftest import WAIT, Pki, pki, run, wait_until  # noqa: F401

HEAD_TIMEOUT = 0.5
"""The test listener's head timeout: short, so refusals come quickly."""


async def whoami(request: Request) -> Response:
    client = request.client
    return JSONResponse({"client": client.host if client else None})


async def broken(_request: Request) -> Response:
    raise RuntimeError("secret internals: password=hunter2")


APP = Starlette(routes=[Route("/whoami", whoami), Route("/broken", broken)])


def limits(**changes: Any) -> HttpLimits:
    values: dict[str, Any] = {"head_timeout": HEAD_TIMEOUT, "max_connections": 4}
    return HttpLimits(**(values | changes))


async def exchange(port: int, data: bytes, *, tls: ssl.SSLContext | None = None) -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=tls), WAIT
    )
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    return answer


def test_a_dripped_head_is_answered_408_in_time() -> None:
    async def scenario() -> None:
        listener = HttpListener(APP, "127.0.0.1", 0, name="test", limits=limits())
        port = await listener.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            answer = b""
            for byte in b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(), 0.02)
                except TimeoutError:
                    continue
                break
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            # Well before the drip could have finished: the timer counts from the
            # connection, not from the last byte.
            assert time.monotonic() - started < HEAD_TIMEOUT + 2
            writer.close()
            await wait_until(lambda: listener.open_connections == 0, "the slot freed")
        finally:
            await listener.stop()

    run(scenario())


def test_a_tls_handshake_never_finished_frees_its_slot(pki: Pki) -> None:  # noqa: F811
    async def scenario() -> None:
        context = pki_tls.server_context(pki.cert, pki.key)
        listener = HttpListener(APP, "127.0.0.1", 0, name="test", limits=limits(), tls=context)
        port = await listener.start()
        try:
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            await wait_until(lambda: listener.open_connections == 4, "four silent clients")
            await wait_until(lambda: listener.open_connections == 0, "handshakes timed out")
            client = pki_tls.client_context(pki.ca_cert)
            answer = await exchange(port, b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n", tls=client)
            assert answer.startswith(b"HTTP/1.1 200 ")
            for _reader, writer in idle:
                writer.close()
        finally:
            await listener.stop()

    run(scenario())


def test_a_forwarded_for_header_is_not_believed() -> None:
    async def scenario() -> None:
        listener = HttpListener(APP, "127.0.0.1", 0, name="test", limits=limits())
        port = await listener.start()
        try:
            forged = b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n"
            forged += b"Forwarded: for=203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\n\r\n"
            answer = await exchange(port, forged)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert b'"client":"127.0.0.1"' in answer
        finally:
            await listener.stop()

    run(scenario())


def test_an_application_failure_is_a_bare_500() -> None:
    async def scenario() -> None:
        listener = HttpListener(APP, "127.0.0.1", 0, name="test", limits=limits())
        port = await listener.start()
        try:
            answer = await exchange(port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 500 ")
            assert b"hunter2" not in answer and b"Traceback" not in answer
            # The listener still serves.
            answer = await exchange(port, b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 ")
        finally:
            await listener.stop()

    run(scenario())


def test_an_oversized_head_and_what_follows_it_are_refused_once() -> None:
    async def scenario() -> None:
        listener = HttpListener(APP, "127.0.0.1", 0, name="test", limits=limits(max_head=1024))
        port = await listener.start()
        try:
            big = b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2048 + b"\r\n\r\n"
            pipelined = big + b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n" * 50
            answer = await exchange(port, pipelined)
            assert answer.startswith(b"HTTP/1.1 431 ")
            assert answer.count(b"HTTP/1.1 ") == 1  # nothing behind the refusal was served
        finally:
            await listener.stop()

    run(scenario())


def test_keep_alive_does_not_keep_a_silent_client() -> None:
    async def scenario() -> None:
        listener = HttpListener(APP, "127.0.0.1", 0, name="test", limits=limits(keep_alive=True))
        port = await listener.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b"}"), WAIT)
            assert first.startswith(b"HTTP/1.1 200 ")
            # The connection stays open for a next request, but not for ever.
            rest = await asyncio.wait_for(reader.read(), WAIT)
            assert rest in (b"",) or rest.startswith(b"HTTP/1.1 408 ")
            writer.close()
            await wait_until(lambda: listener.open_connections == 0, "the slot freed")
        finally:
            await listener.stop()

    run(scenario())


def test_a_flood_is_limited_and_banned_by_the_guard_sip_shares() -> None:
    guard = SourceGuard(rate=0.01, burst=3, ban_seconds=60)
    banned: list[str] = []

    async def scenario() -> None:
        listener = HttpListener(
            APP, "127.0.0.1", 0, name="test", limits=limits(), guard=guard,
            on_ban=banned.append,
        )  # fmt: skip
        port = await listener.start()
        try:
            request = b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(3):  # the burst
                assert (await exchange(port, request)).startswith(b"HTTP/1.1 200 ")
            refused = await exchange(port, request)
            assert refused.startswith(b"HTTP/1.1 429 ") and b"Retry-After: 60" in refused
            assert banned == ["127.0.0.1"] and guard.is_banned("127.0.0.1", time.time())
            # Banned: the next connection is closed before anything is read or answered.
            assert await exchange(port, request) == b""
            await wait_until(lambda: listener.open_connections == 0, "slots freed")
            assert banned == ["127.0.0.1"]  # reported once
        finally:
            await listener.stop()

    run(scenario())
