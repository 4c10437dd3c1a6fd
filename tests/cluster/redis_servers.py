"""Private Redis servers and Sentinels for tests that stop, kill or fail them over.

Each runs ``redis-server`` (Debian's; ``--sentinel`` makes it a Sentinel) on an
ephemeral loopback port, keeps nothing on disk, and is stopped by the test. Start-up
waits until the server answers PING; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (Debian package redis-server)")
        pytest.skip("redis-server is not installed")  # outside CI only
    return found


@dataclass
class RedisServer:
    """One ``redis-server`` (or Sentinel) process."""

    directory: Path
    port: int = field(default_factory=free_port)
    sentinel_of: tuple[str, int] | None = None
    """(service, master port): run as a Sentinel watching that master."""
    replica_of: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary()]
        if self.sentinel_of is not None:
            service, master = self.sentinel_of
            config = self.directory / f"sentinel-{self.port}.conf"
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\n"
                f"sentinel monitor {service} 127.0.0.1 {master} 1\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 5000\n"
            )
            args += [str(config), "--sentinel"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(self.directory)]  # fmt: skip
            if self.replica_of is not None:
                args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(port=self.port, socket_timeout=1)
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, OSError):
                assert self.proc.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.02)  # polling the socket: the event is its first answer
        client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    stop = kill
