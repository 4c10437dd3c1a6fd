"""Several Front End processes on one host: ``conclave serve --workers N`` (docs/pools.md).

One Python process uses one core. A host with several runs N *workers*,
which are members of a pool in every way that matters (:mod:`conclave.cluster`):

* they listen on the same SIP addresses (``SO_REUSEPORT``: the kernel hands
  each new connection, and each UDP sender, to one of them);
* they share registrations, presence and the account lockout through the
  pool's Redis (``[pool] redis``, required), and the store as every member does;
* each also listens, with mutual TLS, on its own *relay* port
  (``[pool] worker_port + i`` on the bind address; loopback when the bind address
  is a wildcard) where its siblings bring requests for the clients connected
  to it, exactly as another host of the pool would.

Each worker is named ``w<i>.<host>`` in the pool's state (``<host>`` is the
server's host name, or its address with dashes under ``.invalid``); its
siblings know it by the host's own certificate name.

Duties that must run once per host stay with worker 0: renewing the
certificate (the others reload what it writes), saving the lockout state and
taking ``conclave lockout reset`` requests (it shares the resets), and the
pool pairing service. Worker i's admin interface listens on the configured
port + i (port 0: any free port).

The supervisor (:func:`supervise_workers`) writes ``conclave.pid``, starts the
workers, forwards SIGTERM, SIGINT and SIGHUP to them, and starts a worker
again when it dies (kill -9, a crash); :data:`MAX_RESTARTS` deaths within
:data:`RESTART_WINDOW` mean something is wrong that a restart does not fix, and
stop the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from conclave.config import PID_FILE, Config
from conclave.supervisor import Supervisor, Then

log = structlog.get_logger("conclave.workers")

MAX_RESTARTS = 5
"""Worker deaths within :data:`RESTART_WINDOW` after which the supervisor gives up."""
RESTART_WINDOW = 60.0
"""Seconds over which worker deaths are counted."""


class WorkersError(Exception):
    """The host cannot run workers as configured; the message is one line."""


@dataclass(frozen=True)
class Worker:
    """This process's place among its host's workers."""

    index: int
    count: int


def member_name(host: str, index: int) -> str:
    """Worker ``index``'s name in the pool state (a DNS name, also for an address)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"w{index}.{host.lower().rstrip('.')}"
    label = str(address).replace(".", "-").replace(":", "-")
    return f"w{index}.{label}.invalid"


def relay_host(config: Config) -> str:
    """Where the workers relay to each other: the bind address, or loopback for a wildcard."""
    bind = config.transports.bind
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def endpoint_of(host: str, port: int) -> str:
    """``host:port`` as configuration writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_workers(config: Config, count: int, data_dir: Path) -> None:
    """Refuse, in one line, what cannot run as ``count`` workers."""
    where = data_dir / "conclave.toml"
    if not config.pool.redis:
        raise WorkersError(
            f"--workers {count} needs the pool state the workers share: set [pool] redis = "
            f'"redis://host:port/db" in {where} (docs/pools.md)'
        )
    if not config.transports.tls:
        raise WorkersError(
            f"--workers {count} needs TLS: the workers relay to each other with mutual TLS "
            f"([transports] tls in {where})"
        )
    last = config.pool.worker_port + count - 1
    if last > 65535:
        raise WorkersError(f"[pool] worker_port + {count} workers passes port 65535 in {where}")


def worker_config(config: Config, worker: Worker) -> Config:
    """``config`` as worker ``worker.index`` runs it: its siblings added to the pool's
    members (the host's certificate name, the relay endpoints) and its admin port."""
    pool = config.pool
    host = config.server.host
    relay = relay_host(config)
    siblings = [j for j in range(worker.count) if j != worker.index]
    names = (*pool.names(), *(member_name(host, j) for j in siblings))
    update = {
        "members": (*pool.members, *(host for _ in siblings)),
        "member_endpoints": (
            *pool.member_endpoints,
            *(endpoint_of(relay, pool.worker_port + j) for j in siblings),
        ),
        "member_names": names,
        "workers": worker.count,
    }
    changes: dict[str, object] = {"pool": pool.model_copy(update=update)}
    admin = config.admin
    if admin.enabled and worker.index:
        address, _, port = admin.bind.rpartition(":")
        if int(port):
            changes["admin"] = admin.model_copy(
                update={"bind": f"{address}:{int(port) + worker.index}"}
            )
    return config.model_copy(update=changes)


def supervise_workers(command: Sequence[str], count: int, data_dir: Path) -> int:
    """Run ``command + ["--worker", i]`` for each worker until a stop signal; return
    the exit status (0 after a stop signal, else that of the failure that ended it)."""
    deaths: deque[float] = deque()
    status = 0

    def started(index: int, pid: int) -> None:
        log.info("worker started", worker=index, pid=pid)

    def exited(index: int, pid: int, code: int, stopping: bool) -> Then:
        nonlocal status
        if stopping:
            log.info("worker stopped", worker=index, pid=pid, status=code)
            return Then.STOP
        log.error("worker died", worker=index, pid=pid, status=code)
        now = time.monotonic()
        deaths.append(now)
        while deaths and now - deaths[0] > RESTART_WINDOW:
            deaths.popleft()
        if len(deaths) > MAX_RESTARTS:
            log.error("workers keep dying; stopping the host", deaths=len(deaths))
            status = code if code > 0 else 1
            return Then.STOP
        return Then.RESTART

    pid_file = data_dir / PID_FILE
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: reload, passed on
    try:
        with Supervisor[int](started=started, forwarded=forwarded) as workers:
            pid_file.write_text(f"{os.getpid()}\n")
            for index in range(count):
                workers.start(index, [*command, "--workers", str(count), "--worker", str(index)])
            workers.run(exited)
        return status
    finally:
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()


def run_workers(data_dir: Path, config: Config, count: int, command: Sequence[str]) -> int:
    """Check, prepare and supervise ``count`` workers; returns the exit status.

    The certificate is checked (and renewed, when ours and due) here, once,
    before any worker starts: N workers renewing it at once would race."""
    from conclave.ops import log as logsetup
    from conclave.pki.lifecycle import open_server_tls
    from conclave.pki.settings import ca_directory, renewal_policy, server_tls_files

    check_workers(config, count, data_dir)
    logsetup.configure(level=config.logging.level, role="workers", host=config.server.host)
    open_server_tls(
        server_tls_files(data_dir, config),
        renewal_policy(config),
        ca_dir=ca_directory(data_dir, config),
        data_dir=data_dir,
    )
    log.info("starting workers", workers=count, relay_ports=[
        config.pool.worker_port + i for i in range(count)
    ])  # fmt: skip
    return supervise_workers(command, count, data_dir)


def worker_command(data_dir: Path) -> list[str]:
    """The command that runs one worker of the Standard Edition in ``data_dir``."""
    return [sys.executable, "-m", "conclave", "serve", "--dir", str(data_dir)]
