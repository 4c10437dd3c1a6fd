"""Fixtures for end-to-end tests against a real `conclave serve` process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import ConclaveServer

PASSWORDS = {
    "alice": "Wonder-Land-123456",
    "bob": "Builder-Man-12345",
    "carol": "Singer-Song-98765",
}


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ConclaveServer]]:
    """Start servers with ``make_server(transports=..., config={...})``; all stop at the end."""
    started: list[ConclaveServer] = []

    def factory(**kwargs: Any) -> ConclaveServer:
        kwargs.setdefault("users", dict(PASSWORDS))
        server = ConclaveServer(tmp_path / f"data{len(started)}", **kwargs)
        server.init().start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
