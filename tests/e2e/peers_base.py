"""Shared pieces of the real-peer harness: tool lookup, ports, waits, TLS relay, sipsak."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
DOMAIN = "example.test"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

# sipp's own scenarios, run with -sn instead of -sf.
SIPP_BUILTINS = frozenset({"uac", "uas", "regexp", "branchc", "branchs", "uac_pcap"})

# sipp exits with -2 (254) when it cannot bind its local port.
_SIPP_BIND_FAILED = 254

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def in_ci() -> bool:
    """True when the CI contract applies: a missing peer tool is a failure."""
    return os.environ.get("CI", "").strip().lower() == "true"


# --------------------------------------------------------------------------
# Tools


def require_tool(name: str) -> str:
    """Return the path of *name*; without it, fail under CI=true, else skip."""
    path = shutil.which(name)
    if path:
        return path
    reason = (
        f"peer tool {name!r} not found on PATH "
        f"(install it with: sudo bash scripts/install-peers.sh)"
    )
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)  # outside CI only: under CI=true it failed above


def tool_version(name: str) -> str:
    """First meaningful line of the tool's own version output."""
    path = require_tool(name)
    flag = {"sipp": "-v", "sipsak": "-V", "baresip": "-h"}.get(name, "--version")
    proc = subprocess.run(
        [path, flag],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=10,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if re.search(r"\d+\.\d+", line):
            return line
    return ""


# --------------------------------------------------------------------------
# Ports and waiting


def free_port(proto: str = "both", host: str = HOST) -> int:
    """A port that is free right now for *proto* ("udp", "tcp" or "both").

    There is a window between this check and the peer binding the port;
    callers that start a peer on it retry on a bind failure.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
            if proto == "tcp":
                return port
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.02,
    alive: Callable[[], bool] | None = None,
) -> Any:
    """Poll *predicate* until it returns something truthy, for at most *timeout* s.

    For conditions that offer no notification (a socket appearing in /proc).
    *alive* returning False aborts early (the peer process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and not alive():
            raise RuntimeError(f"peer exited while waiting for {what}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(entry.path)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


@dataclass(frozen=True)
class BoundSocket:
    proto: str  # "udp" or "tcp" (TCP only when listening)
    host: str
    port: int
    inode: int


def bound_sockets(pid: int) -> list[BoundSocket]:
    """UDP sockets and listening TCP sockets of process *pid* (IPv4, from /proc)."""
    inodes = _socket_inodes(pid)
    found: list[BoundSocket] = []
    for proto in ("udp", "tcp"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[9] not in inodes:
                continue
            if proto == "tcp" and parts[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = parts[1].split(":")
            host = socket.inet_ntoa(bytes.fromhex(addr_hex)[::-1])
            found.append(BoundSocket(proto, host, int(port_hex, 16), int(parts[9])))
    return sorted(found, key=lambda s: s.inode)


def _is_bound(pid: int, port: int, proto: str) -> bool:
    return any(s.port == port and s.proto == proto for s in bound_sockets(pid))


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# TLS relay (Debian's sipp has no TLS)


class TlsRelay:
    """A TCP relay on 127.0.0.1 that adds or removes TLS on the way through.

    ``TlsRelay.to_tls_server(upstream, ca_file)``: plain TCP in, TLS out to
    *upstream*, verifying its certificate against *ca_file* (and the host name
    or IP address).  This is how sipp (built without TLS on Debian) talks to a
    TLS port: ``run_sipp(..., transport="l1", tls_ca=ca)`` starts one.

    ``TlsRelay.tls_terminator(upstream, cert, key)``: TLS in (this cert),
    plain TCP out; e.g. to put a sipp TCP UAS behind a TLS port.

    Each accepted connection gets its own upstream connection; one thread
    per pair moves bytes both ways.  Handshake failures land in ``errors``.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        client_context: ssl.SSLContext | None = None,
        server_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.upstream = upstream
        self.client_context = client_context
        self.server_context = server_context
        self.server_hostname = server_hostname or upstream[0]
        self.handshake_timeout = handshake_timeout
        self.errors: list[str] = []
        self.connections = 0
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.port = 0

    @classmethod
    def to_tls_server(
        cls,
        upstream: tuple[str, int],
        ca_file: str | os.PathLike[str] | None,
        *,
        server_hostname: str | None = None,
        verify: bool = True,
    ) -> TlsRelay:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return cls(upstream, client_context=ctx, server_hostname=server_hostname)

    @classmethod
    def tls_terminator(
        cls,
        upstream: tuple[str, int],
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
    ) -> TlsRelay:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert_file), str(key_file))
        return cls(upstream, server_context=ctx)

    def start(self) -> TlsRelay:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((HOST, 0))
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept_loop, name="tls-relay", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(
                target=self._serve, args=(conn,), name="tls-relay-conn", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._open.add(sock)
        return sock

    def _serve(self, conn: socket.socket) -> None:
        inner: socket.socket = self._track(conn)
        outer: socket.socket | None = None
        try:
            inner.settimeout(self.handshake_timeout)
            if self.server_context is not None:
                inner = self._track(self.server_context.wrap_socket(inner, server_side=True))
            outer = self._track(
                socket.create_connection(self.upstream, timeout=self.handshake_timeout)
            )
            if self.client_context is not None:
                outer = self._track(
                    self.client_context.wrap_socket(outer, server_hostname=self.server_hostname)
                )
            inner.settimeout(None)
            outer.settimeout(None)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            for sock in (inner, outer):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            return
        self._pump(inner, outer)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        # One thread serves both directions: an SSL object must not be read
        # and written from two threads at once.
        peer = {a: b, b: a}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    # Non-blocking read: a readable TLS socket may carry only
                    # a session ticket, and a blocking recv() would then wait
                    # for application data while the other side starves.
                    sock.settimeout(0)
                    try:
                        data = sock.recv(65536)
                        while isinstance(sock, ssl.SSLSocket) and sock.pending():
                            data += sock.recv(sock.pending())
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        continue
                    except (OSError, ssl.SSLError):
                        data = b""
                    if not data:
                        return
                    out = peer[sock]
                    out.settimeout(self.handshake_timeout)
                    out.sendall(data)
        except (OSError, ssl.SSLError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> TlsRelay:
        return self.start() if not self.port else self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# sipsak


def run_sipsak(args: Sequence[str], *, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """Run sipsak with *args* (bounded); exit 0 means a 2xx final answer.

    sipsak over TLS is broken in Debian's 0.9.8.1 (see docs/testing-peers.md):
    use UDP/TCP, e.g. ``run_sipsak(["-s", "sip:bob@127.0.0.1:5060", "-vv"])``.
    """
    sipsak = require_tool("sipsak")
    try:
        return subprocess.run(
            [sipsak, *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        err = exc.stderr or ""
        return subprocess.CompletedProcess(
            [sipsak, *args],
            -9,
            out if isinstance(out, str) else out.decode(errors="replace"),
            (err if isinstance(err, str) else err.decode(errors="replace"))
            + f"\n[harness: sipsak killed after {timeout:g}s]",
        )


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> int | None:
    """SIGTERM ``proc`` if it runs, then SIGKILL if it has not ended within
    ``timeout``; its exit status (None when there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=timeout)
