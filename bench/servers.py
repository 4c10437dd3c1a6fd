"""Server processes under test: deploy, start, wait until ready, stop.

Both servers run in the foreground as children of the runner, bound to
127.0.0.1 only, and are always stopped (SIGTERM, then SIGKILL) when the
``with`` block ends, whatever happened inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from .cpus import server_prefix
from .procstat import Meter, process_tree

HOST = "127.0.0.1"
DOMAIN = "localhost"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def user_name(index: int) -> str:
    """The bench users are u00000, u00001, ... (distinct, sortable)."""
    return f"u{index:05d}"


def password(name: str) -> str:
    """A per-user password (the benchmark's users are throwaway accounts)."""
    return f"Bench-{name}-pw"


EXTRA_USERS = ("rcpt", "callee", *(f"pres{i}" for i in range(10)))
"""Users outside the numbered range: the MESSAGE recipient and the callee
(each registers once, from the sipp UAS that answers), and one presentity
per fan-out size (pres0, pres1, ...)."""


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool]
) -> None:
    """Poll ``check`` until true; fail when ``alive`` turns false or at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not check():
        if not alive():
            raise RuntimeError(f"process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def tcp_listening(port: int) -> bool:
    """Something listens on TCP ``port`` (a LISTEN row in /proc/net/tcp)."""
    hex_port = f":{port:04X}"
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(r.split()[1].endswith(hex_port) and r.split()[3] == "0A" for r in rows)


def udp_bound(port: int) -> bool:
    """A UDP socket is bound to ``port`` (a row in /proc/net/udp)."""
    hex_port = f":{port:04X}"
    try:
        rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(r.split()[1].endswith(hex_port) for r in rows)


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP socket bound to ``port`` (buffer full)."""
    hex_port = f":{port:04X}"
    try:
        rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(int(r.split()[-1]) for r in rows if r.split()[1].endswith(hex_port))


@dataclass
class ServerProcess:
    """A running server: its name, ports by transport and its pids for the meter."""

    name: str
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    log_path: Path | None = None

    def target(self, transport: str) -> str:
        return f"{HOST}:{self.ports[transport]}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        return process_tree(self.pid) if self.alive() else []

    def meter(self) -> Meter:
        return Meter(self.pids)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM the process group, then SIGKILL; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        else:
            # The leader is gone; make sure none of its workers outlive it.
            self._signal(signal.SIGKILL)
        return self.proc.returncode

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Conclave -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    return json.dumps(value)


def patch_config(path: Path, config: dict[str, dict[str, Any]]) -> None:
    """Set ``[section] key = value`` in a conclave.toml written by ``conclave init``."""
    lines = path.read_text().splitlines()
    for section, values in config.items():
        for key, value in values.items():
            rendered = f"{key} = {_toml_value(value)}"
            current, done = None, False
            for i, line in enumerate(lines):
                stripped = line.strip()
                if stripped.startswith("[") and stripped.endswith("]"):
                    current = stripped[1:-1]
                elif current == section and stripped.split("=")[0].strip() == key:
                    lines[i], done = rendered, True
                    break
            if not done:
                idx = next(
                    (i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None
                )
                if idx is None:
                    lines += ["", f"[{section}]", rendered]
                else:
                    lines.insert(idx + 1, rendered)
    path.write_text("\n".join(lines) + "\n")


BENCH_CONFIG: dict[str, dict[str, Any]] = {
    # sipp reads only the first challenge and knows MD5 only (docs/testing-peers.md).
    "auth": {"algorithms": ["MD5", "SHA-256"]},
    # The load generator is one source (127.0.0.1): lift the per-source flood ban.
    "limits": {"requests_per_second": 1_000_000, "burst": 1_000_000},
    "presence": {"notify_merge_window": "0ms", "publish_rate": 1000, "publish_burst": 1000},
}


async def _add_users(data_dir: Path, names: list[str]) -> None:
    from conclave.config import load_config
    from conclave.store.database import Database
    from conclave.store.users import UserStore

    config = load_config(data_dir)
    async with Database(config.database_url(data_dir)) as db:
        store = UserStore(db)
        for name in names:
            await store.add(name, DOMAIN, password(name))


def deploy_conclave(
    data_dir: Path, users: int, config: dict[str, dict[str, Any]] | None = None
) -> None:
    """``conclave init`` a deployment in ``data_dir`` (UDP, TCP, TLS) with the bench users."""
    subprocess.run(
        [sys.executable, "-m", "conclave", "init", "--domain", DOMAIN, "--dir", str(data_dir),
         "--transports", "tls,tcp,udp", "--tls-port", "0", "--sip-port", "0", "--host", HOST],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    merged = {k: dict(v) for k, v in BENCH_CONFIG.items()}
    for section, values in (config or {}).items():
        merged.setdefault(section, {}).update(values)
    patch_config(data_dir / "conclave.toml", merged)
    names = [user_name(i) for i in range(users)] + list(EXTRA_USERS)
    asyncio.run(_add_users(data_dir, names))


def _cprofile() -> list[str]:
    """``-m cProfile -o FILE`` when CONCLAVE_BENCH_CPROFILE names a file (exact call
    counts for a development run; it slows the server about twofold, so never
    with figures that are reported)."""
    path = os.environ.get("CONCLAVE_BENCH_CPROFILE")
    return ["-m", "cProfile", "-o", path] if path else []


def start_conclave(
    data_dir: Path,
    log_path: Path,
    *,
    also: str | None = None,
    name: str = "conclave",
    workers: int = 1,
) -> ServerProcess:
    """``conclave serve --dir DATA`` in its own process group; returns once it logs "ready"
    (once per worker) and, with ``also``, an event of that name (e.g. "presence
    loaded"). Several workers are not pinned to one core (scenario 6)."""
    server = ServerProcess(name, log_path=log_path)
    with log_path.open("wb") as log:
        server.proc = subprocess.Popen(
            [*server_prefix(pin=workers == 1), sys.executable, *_cprofile(), "-m", "conclave",
             "serve", "--dir", str(data_dir), "--workers", str(workers)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
        )  # fmt: skip
    ready: dict[str, Any] = {}

    def seen() -> bool:
        text = log_path.read_text(errors="replace")
        if also is not None and f'"event": "{also}"' not in text:
            return False
        seen_ready = 0
        for raw in text.splitlines():
            if '"ready"' in raw:
                try:
                    ready.update(json.loads(raw))
                except json.JSONDecodeError:
                    continue
                seen_ready += 1
        return seen_ready >= workers

    try:
        # Loading 800,000 contact rows takes a while on this machine: allow for it.
        timeout = START_TIMEOUT if also is None else START_TIMEOUT * 5
        wait_for(seen, timeout, "conclave's ready line", server.alive)
    except RuntimeError:
        server.stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"conclave did not start:\n{tail}") from None
    for item in ready.get("listeners", []):
        transport, _host, port = item.split(":")
        server.ports[transport] = int(port)
    return server
