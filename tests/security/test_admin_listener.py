"""An attacker opens idle connections to the admin listener (``/metrics``, ``/health``).

The listener must not accept more than :data:`MAX_CONNECTIONS` at once (the
rest wait in the kernel's backlog and cost the server nothing), and a silent
client is answered 408 and closed after a short idle timeout, so a scraper
gets its turn soon after.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from conclave.ops.admin import LISTEN_BACKLOG, MAX_CONNECTIONS, AdminServer
from tests.ops.conftest import WAIT, run, wait_until

IDLE = 0.5
"""The test's idle timeout: short, so that the slots free up quickly."""
EXTRA = LISTEN_BACKLOG // 2
"""Idle connections beyond the limit: they fit in the backlog, so connect() completes."""


def accepted_sockets(port: int) -> int:
    """Sockets this process holds whose local end is ``port``: the listener and what it accepted.

    Read from ``/proc`` (socket inodes of our descriptors, matched against
    ``/proc/net/tcp``), so other tests' descriptors do not count.
    """
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            ours.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rpartition(":")[2], 16)
        if local_port == port and fields[9] in ours:
            count += 1
    return count


async def get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    return answer


def test_idle_connections_are_bounded_before_accept_and_time_out() -> None:
    async def scenario() -> None:
        admin = AdminServer("127.0.0.1", 0, {}, idle_timeout=IDLE)
        port = await admin.start()
        idle = [
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
            for _ in range(MAX_CONNECTIONS + EXTRA)
        ]
        try:
            await wait_until(lambda: admin.open_connections == MAX_CONNECTIONS, "slots filled")
            # The listener and one socket per slot: the rest were never accepted.
            assert accepted_sockets(port) == 1 + MAX_CONNECTIONS
            # Each silent client is told 408 and closed; the ones in the backlog get their turn.
            answers = await asyncio.wait_for(
                asyncio.gather(*(reader.read() for reader, _writer in idle)), WAIT
            )
            assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers)
            await wait_until(lambda: admin.open_connections == 0, "every slot free again")
            assert (await get(port, "/health")).endswith(b"alive\n")
        finally:
            for _reader, writer in idle:
                writer.close()
            await admin.stop()

    run(scenario())


def test_a_scraper_is_served_while_a_few_clients_idle() -> None:
    async def scenario() -> None:
        admin = AdminServer("127.0.0.1", 0, {}, idle_timeout=WAIT)
        port = await admin.start()
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        try:
            await wait_until(lambda: admin.open_connections == 3, "three idle clients accepted")
            assert (await get(port, "/health")).startswith(b"HTTP/1.1 200 ")
        finally:
            for _reader, writer in idle:
                writer.close()
            await admin.stop()

    run(scenario())
