"""A stale or planted ``conclave.pid`` must never make a command signal another process.

``conclave user|contacts|privacy …`` tell the server to reload with SIGHUP,
``conclave certs …`` too, and ``conclave logs debug …`` with SIGUSR1. SIGHUP
kills most programs, so each command first checks (one helper,
:func:`conclave.commands.common.server_pid`) that the pid is a ``conclave
serve`` of this data directory that started before it wrote the file.

The stand-in processes below report every SIGHUP and SIGUSR1 on stdout. A
test sends SIGUSR2 itself after the command has finished: the first line the
process prints then says whether the command had signalled it (Linux delivers
pending standard signals lowest number first, and SIGHUP < SIGUSR1 < SIGUSR2).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conclave.commands.common import PID_FILE, server_pid

CONCLAVE = [sys.executable, "-m", "conclave"]
TIMEOUT = 60.0

REPORTER = """
import signal, sys
for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(signum, lambda n, _f: print(signal.Signals(n).name, flush=True))
print("ready", flush=True)
sys.stdin.read()
"""


def conclave(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONCLAVE, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pid-signal") / "data"
    proc = conclave("init", "--domain", "example.test", "--dir", str(path))
    assert proc.returncode == 0, proc.stderr
    for name in ("alice", "bob"):
        assert conclave("user", "add", name, "--dir", str(path)).returncode == 0
    return path


class Reporter:
    """A process with a chosen command line that prints the signals it gets."""

    def __init__(self, *argv: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REPORTER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def first_signal(self) -> str:
        """The first signal it reported, once we have sent it SIGUSR2 as an end marker."""
        self.proc.send_signal(signal.SIGUSR2)
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(TIMEOUT)


@pytest.fixture
def reporters() -> Iterator[list[Reporter]]:
    made: list[Reporter] = []
    yield made
    for reporter in made:
        reporter.close()


def write_pid(data: Path, text: str) -> None:
    (data / PID_FILE).write_text(text)


COMMANDS = [
    ("user", "disable", "alice"),
    ("contacts", "add", "alice", "sip:bob@example.test"),
    ("privacy", "set", "alice", "example.test", "colleagues"),
    ("certs", "crl"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_an_unrelated_process_named_by_the_pid_file_is_left_alone(
    data: Path, reporters: list[Reporter], command: tuple[str, ...]
) -> None:
    victim = Reporter("an-editor", "notes.txt")  # not a conclave server at all
    reporters.append(victim)
    write_pid(data, f"{victim.pid}\n")
    proc = conclave(*command, "--dir", str(data))
    assert proc.returncode == 0, proc.stderr
    assert victim.first_signal() == "SIGUSR2"


def test_another_data_directorys_server_is_left_alone(
    data: Path, tmp_path: Path, reporters: list[Reporter]
) -> None:
    other = Reporter("conclave", "serve", "--dir", "elsewhere", cwd=tmp_path)
    reporters.append(other)
    write_pid(data, f"{other.pid}\n")
    assert server_pid(data) is None
    assert conclave("user", "enable", "alice", "--dir", str(data)).returncode == 0
    assert other.first_signal() == "SIGUSR2"


def test_a_pid_reused_after_the_file_was_written_is_left_alone(
    data: Path, reporters: list[Reporter]
) -> None:
    # A conclave serve for this directory, but started after the pid file was
    # written (an hour ago): the server that wrote it is gone, its pid reused.
    newcomer = Reporter("conclave", "serve", "--dir", str(data))
    reporters.append(newcomer)
    write_pid(data, f"{newcomer.pid}\n")
    an_hour_ago = (data / PID_FILE).stat().st_mtime - 3600
    os.utime(data / PID_FILE, (an_hour_ago, an_hour_ago))
    assert server_pid(data) is None
    proc = conclave("logs", "debug", "start", "--dir", str(data), "--user", "alice")
    assert proc.returncode == 0 and "No server is running" in proc.stdout
    assert newcomer.first_signal() == "SIGUSR2"
    conclave("logs", "debug", "stop", "--dir", str(data))


@pytest.mark.parametrize("text", ["0\n", "-1\n", "garbage\n", ""])
def test_pid_file_contents_that_would_signal_groups_are_refused(data: Path, text: str) -> None:
    write_pid(data, text)
    assert server_pid(data) is None
    # The command itself must survive: kill(0, SIGHUP) would hit its own process group.
    proc = conclave("user", "enable", "alice", "--dir", str(data))
    assert proc.returncode == 0, proc.stderr


def test_our_server_is_signalled(data: Path, tmp_path: Path, reporters: list[Reporter]) -> None:
    relative = os.path.relpath(data, tmp_path)  # --dir as the operator typed it
    server = Reporter("conclave", "serve", "--dir", relative, cwd=tmp_path)
    reporters.append(server)
    write_pid(data, f"{server.pid}\n")
    assert server_pid(data) == server.pid
    assert conclave("user", "enable", "alice", "--dir", str(data)).returncode == 0
    assert server.first_signal() == "SIGHUP"
