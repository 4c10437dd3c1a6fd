"""`conclave serve` that cannot open its sockets: one line on stderr, no traceback, exit 1.

The server's JSON log lines written before the failure (certificate loaded,
users read) stay; the error itself is the one plain line after them.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import CONCLAVE, ConclaveServer

TIMEOUT = 60


def serve(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONCLAVE, "serve", "--dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line that is not a JSON log event; it ends stderr."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    plain = []
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            plain.append(line)
    assert plain == lines[-1:], proc.stderr
    prefix = "conclave: error: "
    assert plain[0].startswith(prefix)
    return plain[0].removeprefix(prefix)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[ConclaveServer]:
    server = ConclaveServer(tmp_path / "data").init()
    yield server
    server.stop()


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program (this test) listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


def set_config(server: ConclaveServer, values: dict[str, dict[str, object]]) -> None:
    server.config = values
    server._patch_config()


def test_the_port_of_our_own_running_server(deployment: ConclaveServer) -> None:
    deployment.start()
    assert deployment.proc is not None
    port = deployment.ports["tls"]
    set_config(deployment, {"transports": {"tls_port": port}})
    message = error_line(serve(deployment.data_dir))
    assert message == (
        f"cannot listen on tls 127.0.0.1:{port}: Address already in use "
        f"(the server for {deployment.data_dir} is already running, pid {deployment.proc.pid})"
    )
    assert deployment.proc.poll() is None  # the running server is left alone


def test_a_port_another_program_holds(deployment: ConclaveServer, held_port: int) -> None:
    set_config(deployment, {"transports": {"tls_port": held_port}})
    message = error_line(serve(deployment.data_dir))
    assert message == (
        f"cannot listen on tls 127.0.0.1:{held_port}: Address already in use (by another "
        f"program: choose another port in [transports] of {deployment.data_dir}/conclave.toml)"
    )


def test_an_address_the_machine_does_not_have(deployment: ConclaveServer) -> None:
    set_config(deployment, {"transports": {"bind": "192.0.2.1"}})  # TEST-NET-1
    message = error_line(serve(deployment.data_dir))
    assert message == (
        "cannot listen on tls 192.0.2.1:0: Cannot assign requested address (not an address "
        f"of this machine: see [transports] bind in {deployment.data_dir}/conclave.toml)"
    )


def test_a_busy_admin_port(deployment: ConclaveServer, held_port: int) -> None:
    set_config(deployment, {"admin": {"enabled": True, "bind": f"127.0.0.1:{held_port}"}})
    message = error_line(serve(deployment.data_dir))
    assert message == (
        f"cannot listen on admin 127.0.0.1:{held_port}: Address already in use (by another "
        f"program: choose another port in [admin] of {deployment.data_dir}/conclave.toml)"
    )
