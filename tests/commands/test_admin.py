"""`conclave init` and `conclave user …` as real processes: effects and one-line errors."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from .processes import run


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    proc = run("init", "--domain", "example.test", "--dir", str(d), "--host", "127.0.0.1")
    assert proc.returncode == 0, proc.stderr
    return d


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_init_creates_everything_with_safe_modes(data: Path) -> None:
    assert (data / "conclave.toml").is_file()
    assert (data / "conclave.db").is_file()
    for key in (data / "ca" / "ca.key", data / "tls" / "server.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    text = (data / "conclave.toml").read_text()
    assert "tls = true" in text and "udp = false" in text and "tcp = false" in text


def test_init_refuses_to_overwrite_and_bad_transport(data: Path, tmp_path: Path) -> None:
    assert "already" in one_line_error(run("init", "--domain", "x.test", "--dir", str(data)))
    err = one_line_error(
        run(
            "init",
            "--domain",
            "x.test",
            "--dir",
            str(tmp_path / "n"),
            "--transports",
            "tls,carrier-pigeon",
        )
    )
    assert "carrier-pigeon" in err


def test_user_lifecycle(data: Path) -> None:
    proc = run("user", "add", "alice", "--dir", str(data))
    assert proc.returncode == 0, proc.stderr
    password = next(
        line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("password: ")
    )
    assert len(password) >= 20
    proc = run(
        "user", "add", "bob", "--dir", str(data), "--password-stdin", stdin="Builder-Man-12345\n"
    )
    assert proc.returncode == 0 and "password" not in proc.stdout.replace("password-", "")
    listing = run("user", "list", "--dir", str(data)).stdout
    assert "alice@example.test\tenabled" in listing and "bob@example.test\tenabled" in listing
    assert run("user", "disable", "bob", "--dir", str(data)).returncode == 0
    assert "bob@example.test\tdisabled" in run("user", "list", "--dir", str(data)).stdout
    assert run("user", "enable", "bob", "--dir", str(data)).returncode == 0
    assert run("user", "passwd", "bob", "--dir", str(data)).returncode == 0
    assert run("user", "remove", "bob", "--dir", str(data)).returncode == 0
    assert "bob@" not in run("user", "list", "--dir", str(data)).stdout
    # Never the clear password in the database.
    with sqlite3.connect(data / "conclave.db") as db:
        dump = "\n".join(db.iterdump())
    assert password not in dump and "Builder-Man-12345" not in dump


def test_user_errors_are_one_line(data: Path, tmp_path: Path) -> None:
    assert run("user", "add", "alice", "--dir", str(data)).returncode == 0
    assert "exists" in one_line_error(run("user", "add", "alice", "--dir", str(data)))
    one_line_error(run("user", "remove", "nobody", "--dir", str(data)))
    one_line_error(run("user", "disable", "nobody", "--dir", str(data)))
    weak = one_line_error(
        run("user", "add", "eve", "--dir", str(data), "--password-stdin", stdin="short\n")
    )
    assert "password" in weak
    assert "not a Conclave data directory" in one_line_error(
        run("user", "list", "--dir", str(tmp_path / "missing"))
    )
    one_line_error(run("user", "add", "bad name!", "--dir", str(data)))
