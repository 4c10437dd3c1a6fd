"""A private PostgreSQL primary and a streaming-replication standby, for failover tests.

Debian's PostgreSQL binaries (``/usr/lib/postgresql/*/bin``) run a primary and a standby
on free loopback ports, each in its own directory under /tmp (PostgreSQL refuses to run
as root, so under root both run as the ``postgres`` user, which must be able to reach
the directory). With ``synchronous=True`` the primary waits for the standby to flush
every commit before it answers (``synchronous_standby_names``): an acknowledged write is
on both. Start-up waits on ``pg_ctl -w`` (the server answering), never on a timer.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .peers_base import free_port

STANDBY_NAME = "standby1"


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries not installed (Debian postgresql)")
        pytest.skip("PostgreSQL server binaries not installed")  # outside CI only
    return Path(found[-1]).parent


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class Node:
    directory: Path
    port: int = field(default_factory=lambda: free_port("tcp"))

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(postgres_bin() / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(
            _as_postgres(command), capture_output=True, text=True, timeout=60, check=check
        )

    def start(self) -> None:
        self.pg_ctl("-w", "-t", "30", "-l", str(self.directory / "log"), "start")

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash, not a shutdown)."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("-m", "immediate", "-w", "stop", check=False)


@dataclass
class ReplicatedPostgres:
    """A primary and its standby; the database ``conclave`` exists on both."""

    root: Path
    primary: Node
    standby: Node
    user: str

    @property
    def url(self) -> str:
        """Both hosts; the driver connects to whichever accepts writes (RFC-less, libpq's
        ``target_session_attrs=read-write``)."""
        hosts = "&".join(f"host=127.0.0.1:{n.port}" for n in (self.primary, self.standby))
        return f"postgresql://{self.user}@/conclave?{hosts}&target_session_attrs=read-write"

    def stop(self) -> None:
        for node in (self.primary, self.standby):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_replicated(*, synchronous: bool = True) -> ReplicatedPostgres:
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="conclave-pg-", dir="/tmp"))
    user = "conclave"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    primary, standby = Node(root / "primary"), Node(root / "standby")
    for node in (primary, standby):
        node.directory.mkdir()
        if os.geteuid() == 0:
            shutil.chown(node.directory, "postgres", "postgres")
    run = lambda args: subprocess.run(  # noqa: E731
        _as_postgres(args), capture_output=True, text=True, timeout=120, check=True
    )
    try:
        run([str(bindir / "initdb"), "-D", str(primary.data), "-U", user, "--auth=trust",
             "--no-sync", "-E", "UTF8"])  # fmt: skip
        settings = [
            f"port = {primary.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{primary.directory}'",
            "wal_level = replica",
            "max_wal_senders = 4",
            "fsync = off",  # a killed postmaster keeps the page cache; only the OS could lose it
            "full_page_writes = off",
        ]
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")
        with (primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        primary.start()
        run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", user,
             "conclave"])  # fmt: skip
        conninfo = f"host=127.0.0.1 port={primary.port} user={user} application_name={STANDBY_NAME}"
        run([str(bindir / "pg_basebackup"), "-d", conninfo, "-D", str(standby.data), "-R",
             "-X", "stream", "--no-sync", "--checkpoint=fast"])  # fmt: skip
        with (standby.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {standby.port}\nunix_socket_directories = '{standby.directory}'\n")
        standby.start()
        if synchronous:  # only now: a commit before the standby existed would wait for it
            with (primary.data / "postgresql.conf").open("a") as conf:
                conf.write(f"synchronous_standby_names = '{STANDBY_NAME}'\n")
            primary.pg_ctl("reload")
    except BaseException:
        for node in (primary, standby):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return ReplicatedPostgres(root, primary, standby, user)
