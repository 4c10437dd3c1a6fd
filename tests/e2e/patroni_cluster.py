"""A private etcd and two PostgreSQL servers run by Patroni, from Conclave's own configuration.

The topology's pool describes its back end (``back_end``: two servers, Patroni,
synchronous); ``conclave topology publish --output DIR`` writes Patroni's files,
which are started here as they would be on the database servers: ``patroni FILE``
as the ``postgres`` user (PostgreSQL refuses to run as root). Everything listens on
127.0.0.1 on free ports, under a temporary directory. Every wait is on Patroni's
REST API or a log line, with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .peers_base import free_port
from .postgres_cluster import _as_postgres, postgres_bin

START_TIMEOUT = 90.0
"""Seconds for etcd, both servers' bootstrap and the standby's first sync."""


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        message = f"{program} not installed (Debian patroni, etcd-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)  # outside CI only
    return path


@dataclass
class Etcd:
    directory: Path
    client_port: int = field(default_factory=lambda: free_port("tcp"))
    peer_port: int = field(default_factory=lambda: free_port("tcp"))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://{self.endpoint}"
        self.proc = subprocess.Popen(
            [
                _need("etcd"), "--name", "e1", "--data-dir", str(self.directory / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"e1={peer}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "etcd.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
        wait_until(lambda: _get(f"{client}/version") is not None, START_TIMEOUT, "etcd")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def _get(url: str) -> tuple[int, Any] | None:
    """(status, JSON body) of a GET, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(body or b"null")
        return exc.code, None
    except (OSError, ValueError):
        return None


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready in {timeout:g}s")
        time.sleep(0.2)  # polling a local health endpoint, bounded by the deadline


@dataclass
class PatroniServer:
    name: str
    config: Path
    port: int
    api_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = _as_postgres([_need("patroni"), str(self.config)])
        self.proc = subprocess.Popen(
            command,
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def api(self, path: str) -> tuple[int, Any] | None:
        return _get(f"http://127.0.0.1:{self.api_port}{path}")

    @property
    def is_primary(self) -> bool:
        answer = self.api("/primary")
        return answer is not None and answer[0] == 200

    def _postmaster(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return None

    def kill(self) -> None:
        """SIGKILL Patroni and its PostgreSQL: the server is lost, not stopped."""
        postmaster = self._postmaster()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        if postmaster is not None:  # both run as postgres: root may signal them
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()
        postmaster = self._postmaster()
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)


@dataclass
class PatroniCluster:
    root: Path
    etcd: Etcd
    servers: list[PatroniServer]

    def primary(self) -> PatroniServer | None:
        return next((s for s in self.servers if s.is_primary), None)

    def cluster(self) -> list[dict[str, Any]]:
        for server in self.servers:
            answer = server.api("/cluster")
            if answer is not None and answer[0] == 200:
                return list(answer[1].get("members", []))
        return []

    def wait_synchronous(self, timeout: float = START_TIMEOUT) -> None:
        """Until one server leads and another streams from it as the synchronous standby."""

        def ready() -> bool:
            members = self.cluster()
            roles = {m.get("role") for m in members}
            streaming = any(
                m.get("role") == "sync_standby" and m.get("state") in ("streaming", "running")
                for m in members
            )
            return "leader" in roles and streaming

        wait_until(ready, timeout, "Patroni leader and synchronous standby")


def back_end(root: Path, etcd: Etcd) -> tuple[dict[str, Any], list[tuple[str, int, int]]]:
    """The topology's back_end for two servers on loopback, and (name, port, api_port)."""
    servers = [(name, free_port("tcp"), free_port("tcp")) for name in ("db1", "db2")]
    doc = {
        "failover": "patroni",
        "synchronous": True,
        "etcd": [etcd.endpoint],
        "data_dir": str(root / "pg"),
        "bin_dir": str(postgres_bin()),
        "socket_dir": str(root / "sock"),
        "servers": [
            {"name": name, "address": "127.0.0.1", "port": port, "api_port": api}
            for name, port, api in servers
        ],
    }
    return doc, servers


@contextlib.contextmanager
def patroni_root() -> Iterator[Path]:
    """A directory the postgres user can use (the servers' data, sockets and files)."""
    root = Path(tempfile.mkdtemp(prefix="conclave-patroni-", dir="/tmp"))
    for sub in ("pg", "sock", "files"):
        (root / sub).mkdir()
    if os.geteuid() == 0:
        for path in (root, root / "pg", root / "sock", root / "files"):
            shutil.chown(path, "postgres", "postgres")
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start_cluster(root: Path, etcd: Etcd, published: Path, pool: str) -> PatroniCluster:
    """Start Patroni on the files ``conclave topology publish`` wrote into ``published``."""
    servers = []
    for config in sorted(published.glob(f"patroni-{pool}-db*.yml")):
        name = config.stem.removeprefix(f"patroni-{pool}-")
        text = config.read_text()
        document = json.loads(text[text.index("{") :])
        if os.geteuid() == 0:
            shutil.chown(config, "postgres", "postgres")
            shutil.chown(published / f"patroni-{pool}-post-bootstrap.sh", "postgres", "postgres")
        api_port = int(document["restapi"]["listen"].rpartition(":")[2])
        port = int(document["postgresql"]["listen"].rpartition(":")[2])
        log = root / "files" / f"{name}.log"
        log.touch()
        server = PatroniServer(
            name, config, port, api_port, Path(document["postgresql"]["data_dir"]), log
        )
        servers.append(server)
    cluster = PatroniCluster(root, etcd, servers)
    try:
        servers[0].start()  # the first bootstraps; the second then clones it
        wait_until(lambda: servers[0].is_primary or servers[0].exited(), START_TIMEOUT,
                   "the first Patroni server")  # fmt: skip
        assert not servers[0].exited(), "the first Patroni server stopped"
        servers[1].start()
        cluster.wait_synchronous()
    except AssertionError as exc:
        tails = "\n".join(
            f"--- {s.name}:\n" + "\n".join(s.log.read_text(errors="replace").splitlines()[-40:])
            for s in servers
        )
        for server in servers:
            server.stop()
        raise AssertionError(f"{exc}\n{tails}") from None
    return cluster
