"""One bound UDP socket as an asyncio protocol: each datagram is one message.

SIP over UDP needs no framing: a datagram holds exactly one message (RFC 3261
§18.3), so each goes to ``on_message`` whole. Datagrams holding nothing but CR
and LF are dropped here: many user agents send them as NAT keep-alives, and
the parser would otherwise log every one as unparseable. So are datagrams
longer than the manager's ``max_message_size`` (``[limits] max_message_size``):
they are counted, and logged at most once per :data:`OVERSIZED_LOG_INTERVAL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Final, Protocol

import structlog

from conclave.sip.flow import Flow, format_address
from conclave.transport.flow import socket_address
from conclave.transport.guard import SourceGuard


class DatagramHost(Protocol):
    """What a UDP endpoint may ask of its manager: the whole interface between them."""

    guard: SourceGuard | None
    guard_clock: Callable[[], float]
    max_message_size: int

    def deliver(self, data: bytes, flow: Flow, queued: float = 0.0) -> None:
        """One datagram, to the stack, with the seconds it waited in the kernel."""
        ...


MAX_DATAGRAM: Final = 65_535
"""The largest UDP payload over IPv4 (less, really, after headers); anything
bigger cannot be a single SIP-over-UDP message."""

SOCKET_BUFFER: Final = 4 * 1024 * 1024
"""SO_RCVBUF and SO_SNDBUF asked for on every UDP listening socket (4 MiB).

One PUBLISH fans out to every watcher at once, and their answers come back
at once: 1,000 NOTIFY 200 OKs arrive faster than the event loop reads them.
The Linux default (net.core.rmem_default, 208 KiB: a few hundred datagrams
once the kernel's per-packet overhead is counted) overflowed and dropped
about 19,000 datagrams over 20 fan-outs to 1,000 watchers in the benchmark,
each drop costing a retransmission 500 ms or more later. The kernel caps
what is asked at net.core.rmem_max / wmem_max; the effective size is read
back and logged."""

_GENERIC_LINUX: Final = sys.platform == "linux" and (socket.SO_SNDBUF, socket.SO_RCVBUF) == (7, 8)
"""Linux with the asm-generic socket option numbers (x86, ARM, RISC-V...; not MIPS,
SPARC, Alpha or PA-RISC, whose numbers differ)."""

_FORCE_OPTIONS: Final[dict[int, int]] = (
    {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32} if _GENERIC_LINUX else {}
)
"""SO_RCVBUFFORCE and SO_SNDBUFFORCE (not exported by the socket module): they
ignore the rmem_max / wmem_max cap, but only with CAP_NET_ADMIN."""

READ_BATCH: Final = 64
"""Datagrams read per wake-up of the socket: enough to drain a burst cheaply,
few enough that timers and the other sockets are served in between."""

_SO_TIMESTAMPNS: Final[int | None] = 35 if _GENERIC_LINUX else None
"""SO_TIMESTAMPNS (and SCM_TIMESTAMPNS), which the socket module does not
export: the kernel's receive time of each datagram as a struct timespec."""

_TIMESPEC: Final = struct.Struct("@qq")
"""struct timespec on a 64-bit Linux: seconds and nanoseconds."""

OVERSIZED_LOG_INTERVAL: Final = 10.0
"""Seconds between two "oversized datagram dropped" warnings from one socket.
Source addresses of UDP are trivially spoofed and each datagram is cheap to
send, so one line per datagram would let anyone flood the log; each line
carries the count dropped since the previous one instead."""

log = structlog.get_logger("conclave.transport")


class UdpEndpoint:
    """A listening UDP socket, which is also the one we send from for its flows.

    It reads the socket itself (``add_reader`` and ``recvmsg``) rather than
    through an event-loop datagram transport, to learn from the kernel when
    each datagram arrived (``SO_TIMESTAMPNS``): how long it waited in the
    receive queue is what the stack's overload control judges
    (:mod:`conclave.core.overload`). At most :data:`READ_BATCH` datagrams
    are read per wake-up, so timers and other sockets are served in between.
    """

    def __init__(self, manager: DatagramHost, sock: socket.socket) -> None:
        self._manager = manager
        self.sock = sock
        self.local: tuple[str, int] = socket_address(sock.getsockname())
        self.open = True
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.oversized = 0
        """Datagrams dropped for exceeding the manager's ``max_message_size``."""
        self.send_dropped = 0
        """Datagrams not sent because the socket's send buffer was full."""
        self._oversized_logged = 0  # self.oversized when the last warning went out
        self._oversized_log_at = float("-inf")  # time.monotonic() of that warning
        self._stamped = _enable_timestamps(sock)
        self._ancillary = socket.CMSG_SPACE(_TIMESPEC.size) if self._stamped else 0
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock, ancillary = self.sock, self._ancillary
        for _ in range(READ_BATCH):
            try:
                data, cmsgs, _flags, addr = sock.recvmsg(MAX_DATAGRAM + 1, ancillary)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error for an earlier sendto(), reported on a read; the
                # transaction layer times out on its own: a debug line only.
                # (Do not set IP_RECVERR to learn more: queued errors make the
                # socket report POLLERR, and libuv then stops this reader for
                # good. BENCHMARKS.md, 2026-12-06 evening.)
                log.debug("udp error", local=self.local, error=str(exc))
                return
            queued = _waited(cmsgs) if ancillary else 0.0
            self._received(data, addr, queued)
            if not self.open:
                return

    def _received(self, data: bytes, addr: object, queued: float) -> None:
        if not data.strip(b"\r\n"):
            return
        try:
            remote = socket_address(addr)
        except ValueError:
            return
        manager = self._manager
        guard = manager.guard
        if guard is not None and guard.is_banned(remote[0], manager.guard_clock()):
            return  # silently: logging each datagram of a flood would amplify it
        if len(data) > manager.max_message_size:
            self._oversized(len(data), remote, manager.max_message_size)
            return
        manager.deliver(data, Flow("udp", remote, self.local), queued)

    def _oversized(self, size: int, remote: tuple[str, int], limit: int) -> None:
        """Count a datagram over the size limit; warn unless one did so lately."""
        self.oversized += 1
        now = time.monotonic()
        if now - self._oversized_log_at < OVERSIZED_LOG_INTERVAL:
            return
        log.warning(
            "oversized datagram dropped",
            peer=format_address(remote),
            local=format_address(self.local),
            size=size,
            limit=limit,
            dropped=self.oversized - self._oversized_logged,
            dropped_total=self.oversized,
        )
        self._oversized_logged = self.oversized
        self._oversized_log_at = now

    def send(self, data: bytes, remote: tuple[str, int]) -> bool:
        """``sendto`` unless closed or oversized; False when the kernel's send
        buffer is full too (dropped, as UDP would: the transaction layer
        retransmits what needs it)."""
        if not self.open or len(data) > MAX_DATAGRAM:
            return False
        try:
            self.sock.sendto(data, remote)
        except (BlockingIOError, InterruptedError):
            self.send_dropped += 1
            return False
        except (OSError, ValueError, TypeError) as exc:
            log.debug("udp send failed", local=self.local, remote=remote, error=str(exc))
            return False
        return True

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if not self.lost.done():
            self.lost.set_result(None)


def _enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram with its arrival time (Linux)."""
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _waited(cmsgs: list[tuple[int, int, bytes]]) -> float:
    """Seconds the datagram waited in the receive queue, from its kernel stamp."""
    for level, kind, data in cmsgs:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return max(0.0, time.time() - (int(seconds) + int(nanoseconds) / 1e9))
    return 0.0


def udp_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` (an IP literal) and ``port``.

    Bound here rather than by the event loop so that a failed bind leaves
    nothing behind (uvloop leaks its transport when its own bind fails), and so
    that UDP follows the TCP rule of one socket per address family.
    ``reuse_port``: as for TCP (the kernel picks a socket by the sender's address,
    so one client's datagrams keep reaching the same process).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    size_buffers(sock, SOCKET_BUFFER)
    return sock


def size_buffers(sock: socket.socket, size: int) -> tuple[int, int]:
    """Ask for ``size``-octet receive and send buffers; return the effective ones.

    Best effort: the kernel may clamp the size (net.core.rmem_max and
    wmem_max on Linux), in which case a privileged process tries the FORCE
    variants; a failure is never fatal, the socket works with what it has.
    The effective sizes are what getsockopt reports (Linux reports twice the
    size set, its bookkeeping overhead included).
    """
    effective: list[int] = []
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        got = _set_buffer(sock, option, size)
        force = _FORCE_OPTIONS.get(option)
        if got < size and force is not None:
            got = max(got, _set_buffer(sock, force, size, read=option))
        effective.append(got)
    rcvbuf, sndbuf = effective
    if rcvbuf < size or sndbuf < size:
        log.info(
            "udp socket buffers smaller than asked; raise net.core.rmem_max and wmem_max",
            local=sock.getsockname()[:2],
            asked=size,
            rcvbuf=rcvbuf,
            sndbuf=sndbuf,
        )
    else:
        log.debug("udp socket buffers", local=sock.getsockname()[:2], rcvbuf=rcvbuf, sndbuf=sndbuf)
    return rcvbuf, sndbuf


def _set_buffer(sock: socket.socket, option: int, size: int, *, read: int | None = None) -> int:
    """setsockopt(SOL_SOCKET, ``option``, ``size``), failures ignored; the size read back."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    try:
        return sock.getsockopt(socket.SOL_SOCKET, option if read is None else read)
    except OSError:
        return 0
