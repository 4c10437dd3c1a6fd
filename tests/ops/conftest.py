"""Shared fixtures for the operations tests: a bounded event-loop runner and a small PKI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

from conclave.ops import log as logsetup
from conclave.pki import CertificateAuthority, create_ca

T = TypeVar("T")

WAIT = 10.0
"""Seconds any single awaited event may take before the test fails."""
TEST_TIMEOUT = 60.0
"""Seconds a whole test coroutine may take."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh event loop, bounded by :data:`TEST_TIMEOUT`."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, TEST_TIMEOUT)

    return asyncio.run(bounded())


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` on the loop until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Pki:
    """A CA and one server certificate (127.0.0.1, logs.example.test) issued by it."""

    ca: CertificateAuthority
    ca_cert: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("ops-pki")
    ca = create_ca(root / "ca", common_name="Conclave Ops Test CA")
    leaf = ca.issue_server(["logs.example.test"], ["127.0.0.1"])
    leaf.write(root / "tls" / "server.crt", root / "tls" / "server.key")
    return Pki(ca, ca.cert_path, root / "tls" / "server.crt", root / "tls" / "server.key")


@pytest.fixture
def logging_configured() -> Iterator[None]:
    """JSON logging with a known host and role; the sink is cleared afterwards.

    The host is a name the ``pki`` fixture's certificate carries, as a real
    server's is: an in-process controller would otherwise correct the host of
    every event the agent forwards, and log (and forward) each correction.
    """
    logsetup.configure(level="info", role="standard", host="logs.example.test")
    yield
    logsetup.set_sink(None)
    structlog.reset_defaults()
