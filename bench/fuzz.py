"""Scenario 8: a million mutated messages against a running server (issue 14).

The mutations are the parser fuzz loop's (:func:`mutate`, which
``tests/sip/test_properties.py`` also runs, 20,000 of them, in CI): byte
flips, inserted separators, deletions and random runs over the RFC 4475 /
RFC 5118 torture messages. Here they go over UDP to a real ``conclave
serve``, paced so the run is bounded in time; afterwards the server must
still be running and answer an OPTIONS, and its resident memory at the
start and the end is reported.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .procstat import status_kib
from .servers import HOST, ServerProcess

SEPARATORS = (b"\r\n", b" ", b",", b";", b"<", b">", b'"', b"%", b":")
TORTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "sip-torture"
MESSAGES = 1_000_000
RATE = 5_000.0
"""Datagrams per second: a pace the server can take without shedding (the
point is what malformed input does to it, not overload, scenario 7)."""
PROBE_TIMEOUT = 5.0


def seeds() -> list[bytes]:
    """Every message of the torture corpus in this repository."""
    return [path.read_bytes() for path in sorted(TORTURE.glob("*/*.dat"))]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """One mutation of ``seed``: 1-8 edits, as the CI fuzz loop does."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(data) + 1)
        choice = rng.random()
        if choice < 0.3 and pos < len(data):
            data[pos] = rng.randrange(256)
        elif choice < 0.6:
            data[pos:pos] = rng.choice(SEPARATORS)
        elif choice < 0.8:
            del data[pos : pos + rng.randint(1, 20)]
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
    return bytes(data)


def probe(port: int) -> bool:
    """An OPTIONS to the server itself gets an answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(PROBE_TIMEOUT)
        local = sock.getsockname()[1]
        sock.sendto(
            (
                f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bKfuzzprobe{time.monotonic_ns()}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@localhost>;tag=p\r\n"
                f"To: <sip:{HOST}:{port}>\r\nCall-ID: fuzz-probe\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            (HOST, port),
        )
        try:
            return sock.recv(65535).startswith(b"SIP/2.0 ")
        except TimeoutError:
            return False


def run_fuzz(
    server: ServerProcess,
    *,
    messages: int = MESSAGES,
    rate: float = RATE,
    seed: int = 4475,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    port = server.ports["udp"]
    corpus = seeds()
    rng = random.Random(seed)
    rss_start = status_kib(server.pid, "VmRSS")
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.setblocking(False)
        for n in range(messages):
            data = mutate(rng, rng.choice(corpus))[:65_000]
            # A full buffer or an odd datagram: UDP loses it, the run goes on.
            with contextlib.suppress(BlockingIOError, OSError):
                sock.sendto(data, (HOST, port))
            # Pace: sleep off any lead over the schedule every 1,000 datagrams.
            if n % 1000 == 999:
                lead = started + (n + 1) / rate - time.monotonic()
                if lead > 0:
                    time.sleep(lead)
                if n % 100_000 == 99_999:
                    log(f"  fuzz: {n + 1} sent, server alive: {server.alive()}")
            # Replies are not read: the kernel drops them when our buffer fills.
    elapsed = time.monotonic() - started
    alive = server.alive()
    answered = alive and probe(port)
    rss_end = status_kib(server.pid, "VmRSS") if alive else 0
    result = {
        "messages": messages,
        "seconds": round(elapsed, 1),
        "alive": alive,
        "answers_afterwards": answered,
        "rss_kib_start": rss_start,
        "rss_kib_end": rss_end,
    }
    log(f"  fuzz: {result}")
    return result
