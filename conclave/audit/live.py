"""The running deployment: which sockets a server process really listens on (Linux /proc).

A server writes its pid beside its data (``conclave.pid`` for a Front End,
``logging-controller.pid`` for the controller). The process's sockets are
its ``/proc/PID/fd`` entries that point at ``socket:[INODE]``; the inode is
matched against ``/proc/PID/net/{tcp,tcp6,udp,udp6}``. TCP sockets count
when listening; UDP sockets when bound to a port below the ephemeral range
(a resolver's short-lived sockets live in that range).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from conclave.config import PID_FILE
from conclave.ops.controller import PID_FILE as CONTROLLER_PID_FILE

PID_FILES = {"frontend": PID_FILE, "logging-controller": CONTROLLER_PID_FILE}
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Socket:
    protocol: str
    """``tcp`` or ``udp``"""
    address: str
    port: int


def running_pid(data_dir: Path, role: str) -> int | None:
    """The pid of the role's server on ``data_dir`` if it is running, else None."""
    name = PID_FILES.get(role)
    if name is None:
        return None
    try:
        pid = int((Path(data_dir) / name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"conclave" in cmdline else None


def _inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(entry.path)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6 in /proc: four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listening_sockets(pid: int) -> list[Socket] | None:
    """The process's listening TCP and bound UDP sockets; None if /proc cannot tell."""
    inodes = _inodes(pid)
    if not inodes and not Path(f"/proc/{pid}/fd").exists():
        return None
    low = _ephemeral_low()
    found: set[Socket] = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        protocol = table.rstrip("6")
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[9] not in inodes:
                continue
            if protocol == "tcp" and parts[3] != _TCP_LISTEN:
                continue
            address_hex, port_hex = parts[1].split(":")
            port = int(port_hex, 16)
            if protocol == "udp" and port >= low:
                continue
            found.add(Socket(protocol, _address(address_hex), port))
    return sorted(found, key=lambda s: (s.protocol, s.port, s.address))
