"""The admin HTTP listener: /health, /ready, /metrics and what it refuses."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conclave.ops.admin import MAX_REQUEST_HEAD, AdminServer

from .conftest import WAIT, run


async def _get(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.title(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _request(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_pages() -> None:
    state = {"db": True}

    async def listeners() -> bool:
        return True

    async def database() -> bool:
        if not state["db"]:
            raise ConnectionError("database unreachable")
        return True

    async def scenario() -> None:
        admin = AdminServer("127.0.0.1", 0, {"listeners": listeners, "database": database})
        port = await admin.start()
        try:
            status, _, body = await _get(port, _request("/health"))
            assert (status, body) == (200, b"alive\n")
            status, headers, body = await _get(port, _request("/ready"))
            assert status == 200 and headers["Content-Type"] == "application/json"
            assert json.loads(body) == {
                "ready": True,
                "checks": {"listeners": True, "database": True},
            }
            state["db"] = False
            status, _, body = await _get(port, _request("/ready"))
            assert status == 503 and json.loads(body)["checks"]["database"] is False
            status, headers, body = await _get(port, _request("/metrics?x=1"))
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            assert any(
                f.name == "conclave_auth_failures"
                for f in text_string_to_metric_families(body.decode())
            )
            status, headers, body = await _get(port, _request("/metrics", "HEAD"))
            assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        finally:
            await admin.stop()

    run(scenario())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (_request("/nope"), 404),
        (_request("/metrics", "POST"), 405),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_HEAD + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\r\n", 400),  # the client gives up half way
    ],
)
def test_refusals(request_bytes: bytes, status: int) -> None:
    async def scenario() -> None:
        admin = AdminServer("127.0.0.1", 0, {})
        port = await admin.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes)
            if not request_bytes.endswith(b"\r\n\r\n"):
                writer.write_eof()
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), WAIT)
            writer.close()
            assert raw.split(b" ")[1] == str(status).encode()
        finally:
            await admin.stop()

    run(scenario())
