"""UDP listening sockets ask for large buffers, and live with what the kernel grants."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import cast

from structlog.testing import capture_logs

from conclave.transport.udp import SOCKET_BUFFER, size_buffers, udp_socket


def _kernel_cap(name: str) -> int | None:
    try:
        return int(Path(f"/proc/sys/net/core/{name}").read_text())
    except (OSError, ValueError):
        return None


def test_listening_socket_gets_large_buffers() -> None:
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock = udp_socket("127.0.0.1", 0)
    try:
        rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert rcvbuf >= plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert sndbuf >= plain.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        # Where the kernel allows the full size, it is granted (Linux reports
        # twice what was set, so at least the size asked for).
        rmem_max, wmem_max = _kernel_cap("rmem_max"), _kernel_cap("wmem_max")
        if rmem_max is not None and rmem_max >= SOCKET_BUFFER:
            assert rcvbuf >= SOCKET_BUFFER
        if wmem_max is not None and wmem_max >= SOCKET_BUFFER:
            assert sndbuf >= SOCKET_BUFFER
        assert not sock.getblocking()
    finally:
        plain.close()
        sock.close()


class _StubbornSocket:
    """A socket whose buffers cannot be changed (no privilege, a clamped kernel)."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.asked.append((level, option, value))
        raise PermissionError(1, "Operation not permitted")

    def getsockopt(self, level: int, option: int) -> int:
        return 212_992

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 5060)


def test_refused_buffer_size_is_not_fatal_and_is_logged() -> None:
    stub = _StubbornSocket()
    with capture_logs() as logs:
        sizes = size_buffers(cast(socket.socket, stub), SOCKET_BUFFER)
    assert sizes == (212_992, 212_992)
    asked = {option for _, option, _ in stub.asked}
    assert {socket.SO_RCVBUF, socket.SO_SNDBUF} <= asked
    assert all(value == SOCKET_BUFFER for _, _, value in stub.asked)
    [entry] = [e for e in logs if "smaller than asked" in e["event"]]
    assert entry["log_level"] == "info"
    assert (entry["rcvbuf"], entry["sndbuf"], entry["asked"]) == (212_992, 212_992, SOCKET_BUFFER)
