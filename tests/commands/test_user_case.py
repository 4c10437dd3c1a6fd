"""`conclave user …` with names that differ only in case, as real processes (issue 12, item 4)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from conclave.store.passwords import ha1

from .processes import ok, run


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def users(data: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(data / "conclave.db") as db:
        return db.execute("SELECT name, ha1_md5, disabled FROM users ORDER BY name").fetchall()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    ok("init", "--domain", "example.test", "--dir", str(d), "--host", "127.0.0.1")
    ok("user", "add", "alice", "--dir", str(d), "--password-stdin", stdin="Wonder-Land-123456\n")
    return d


def test_adding_a_case_variant_is_a_one_line_error(data: Path) -> None:
    for variant in ("Alice", "ALICE"):
        proc = run("user", "add", variant, "--dir", str(data))
        assert one_line_error(proc) == (
            "conclave: error: user alice@example.test already exists "
            "(names differing only in case are one user)"
        )
        assert proc.stdout == ""  # no password printed for an account never made
    assert [name for name, _, _ in users(data)] == ["alice"]


def test_commands_find_the_user_in_any_case(data: Path) -> None:
    d = str(data)
    out = ok("user", "passwd", "ALICE", "--dir", d, "--password-stdin", stdin="New-Secret-98765\n")
    assert out == "password changed for alice\n"
    ((name, md5, _),) = users(data)
    # Hashed with the stored name: the one clients sign in as.
    assert (name, md5) == ("alice", ha1("MD5", "alice", "example.test", "New-Secret-98765"))
    assert ok("user", "disable", "Alice", "--dir", d) == "disabled alice\n"
    assert users(data)[0][2] == 1
    assert ok("user", "enable", "aLiCe", "--dir", d) == "enabled alice\n"
    assert ok("user", "remove", "ALICE", "--dir", d) == "removed alice\n"
    assert users(data) == []
    error = one_line_error(run("user", "remove", "alice", "--dir", d))
    assert error == "conclave: error: no such user: alice@example.test"
