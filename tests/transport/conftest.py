"""Shared fixtures: an event-loop runner for asyncio and uvloop, inboxes, and a PKI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from conclave.pki import create_ca
from conclave.transport import Flow

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, T]], T]

WAIT = 5.0
"""Seconds any single awaited event may take before the test fails."""

TEST_TIMEOUT = 30.0
"""Seconds a whole test coroutine may take."""


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    """Run a test coroutine to completion on the event loop under test.

    The server runs on uvloop; plain asyncio is tested too so that the code
    does not come to depend on either loop's quirks.
    """
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(coro, TEST_TIMEOUT)

        with asyncio.Runner(loop_factory=factory) as loop_runner:
            return loop_runner.run(bounded())

    return runner


class Inbox:
    """Collects ``on_message`` and ``on_closed`` callbacks for awaiting in a test."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[bytes, Flow]] = asyncio.Queue()
        self.closed: asyncio.Queue[Flow] = asyncio.Queue()
        self.queued: list[float] = []
        """Seconds each message waited in the kernel (UDP), as the transport saw it."""

    def on_message(self, data: bytes, flow: Flow, queued: float = 0.0) -> None:
        self.queued.append(queued)
        self.messages.put_nowait((data, flow))

    def on_closed(self, flow: Flow) -> None:
        self.closed.put_nowait(flow)

    async def message(self) -> tuple[bytes, Flow]:
        return await asyncio.wait_for(self.messages.get(), WAIT)

    async def closure(self) -> Flow:
        return await asyncio.wait_for(self.closed.get(), WAIT)


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate for ``sip.example.test`` and 127.0.0.1."""

    ca_cert: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


SERVER_NAME = "sip.example.test"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    root = tmp_path_factory.mktemp("transport-pki")
    ca = create_ca(root / "ca", common_name="Conclave Transport Test CA")
    ca.issue_server([SERVER_NAME], ["127.0.0.1"]).write(root / "server.crt", root / "server.key")
    # A second server certificate doubles as the client certificate for mutual TLS.
    ca.issue_server(["peer.example.test"], []).write(root / "peer.crt", root / "peer.key")
    return TlsFiles(
        ca_cert=ca.cert_path,
        cert=root / "server.crt",
        key=root / "server.key",
        client_cert=root / "peer.crt",
        client_key=root / "peer.key",
    )
