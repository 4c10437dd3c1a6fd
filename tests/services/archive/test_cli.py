"""`conclave archive …`: policies in the database, verify, export and purge."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conclave.cli import main
from conclave.services.archive.record import format_time
from conclave.services.archive.segments import ArchiveLog, list_segments

from .helpers import T0, message, rewrite

CONCLAVE = [sys.executable, "-m", "conclave"]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("archive") / "data"
    for args in (
        ["init", "--domain", "example.test", "--dir", str(d), "--host", "127.0.0.1"],
        ["user", "add", "alice", "--dir", str(d)],
        ["user", "add", "bob", "--dir", str(d)],
    ):
        subprocess.run([*CONCLAVE, *args], check=True, capture_output=True, timeout=60)
    return d


def test_policy_set_show_clear(data: Path) -> None:
    shown = ok("archive", "policy", "show", "--dir", str(data))
    assert "archiving: OFF" in shown
    assert "global: internal on, federated on" in shown
    assert "user alice@example.test: internal off" in ok(
        "archive", "policy", "set", "alice", "off", "--dir", str(data)
    )
    out = ok("archive", "policy", "set", "user:alice", "--federated", "inherit", "--dir", str(data))
    assert "internal off, federated inherit" in out
    ok("archive", "policy", "set", "pool:default", "--federated", "off", "--dir", str(data))
    alice = ok("archive", "policy", "show", "alice", "--dir", str(data))
    assert "internal:  off (from user alice@example.test)" in alice
    assert "federated: off (from pool default)" in alice
    bob = ok("archive", "policy", "show", "sip:bob@example.test", "--dir", str(data))
    assert "internal:  on (from global)" in bob
    listing = ok("archive", "policy", "show", "--dir", str(data))
    assert "pool default: internal inherit, federated off" in listing
    ok("archive", "policy", "clear", "alice", "--dir", str(data))
    ok("archive", "policy", "clear", "pool:default", "--dir", str(data))
    assert "from global" in ok("archive", "policy", "show", "alice", "--dir", str(data))
    assert run("archive", "policy", "clear", "alice", "--dir", str(data)).exit_code == 1


def test_policy_for_unknown_user_is_refused(data: Path) -> None:
    result = run("archive", "policy", "set", "nobody", "on", "--dir", str(data))
    assert result.exit_code == 1
    assert "no such user: nobody@example.test" in result.output
    assert run("archive", "policy", "set", "alice", "--dir", str(data)).exit_code == 1


def archive_of(data: Path, count: int) -> Path:
    directory = data / "archive"
    archive = ArchiveLog(directory)
    archive.create()
    archive.append([message(n) for n in range(1, count + 1)])
    archive.close()
    return directory


def test_verify_export_purge(data: Path, tmp_path: Path) -> None:
    directory = archive_of(data, 4)
    assert "archive OK: 4 records" in ok("archive", "verify", "--dir", str(data))
    report = json.loads(ok("archive", "verify", "--json", "--dir", str(data)))
    assert report["ok"] and report["last_seq"] == 4

    out = tmp_path / "alice.jsonl"
    result = run("archive", "export", "--user", "alice", "--dir", str(data), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 4 message(s)" in result.output
    assert len(out.read_text().splitlines()) == 4
    mbox = run("archive", "export", "--format", "mbox", "--user", "carol", "--dir", str(data))
    assert "exported 0 message(s)" in mbox.output
    since = run(
        "archive", "export", "--since", format_time(T0 + 3), "--dir", str(data), "-o", str(out)
    )
    assert since.exit_code == 0, since.output
    assert [json.loads(x)["seq"] for x in out.read_text().splitlines()] == [3, 4]

    segment = list_segments(directory)[0]
    rewrite(segment, lambda raw: [raw[0], raw[2], raw[1], raw[3]])
    failed = run("archive", "verify", "--dir", str(data))
    assert failed.exit_code == 1
    assert "FAILED" in failed.output and "record 2" in failed.output
    rewrite(segment, lambda raw: [raw[0], raw[2], raw[1], raw[3]])  # put it back
    assert run("archive", "verify", "--dir", str(data)).exit_code == 0

    assert "nothing to purge" in ok(
        "archive", "purge", "--before", "2026-01-01", "--dir", str(data)
    )
    purged = ok("archive", "purge", "--before", "2030-01-01", "--dir", str(data))
    assert "purged 4 record(s)" in purged
    assert "purged through record 4" in ok("archive", "verify", "--dir", str(data))


def test_bad_date_is_a_usage_error(data: Path) -> None:
    result = run("archive", "purge", "--before", "yesterday", "--dir", str(data))
    assert result.exit_code == 2
    assert "not a date" in result.output


def test_archiving_off_is_said_not_failed(tmp_path: Path) -> None:
    """With archiving off and no archive, verify, export and purge say archiving is
    off (one line, exit 1) instead of reporting a failed verification."""
    d = tmp_path / "data"
    subprocess.run(
        [*CONCLAVE, "init", "--domain", "example.test", "--dir", str(d)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    for args, action in (
        (["verify"], "verify"),
        (["verify", "--json"], "verify"),
        (["export"], "export"),
        (["purge", "--before", "2030-01-01"], "purge"),
    ):
        proc = subprocess.run(
            [*CONCLAVE, "archive", *args, "--dir", str(d)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
        assert proc.stderr.splitlines() == [
            f"conclave: error: archiving is off ([archive] enabled = false in "
            f"{d / 'conclave.toml'}): there is no archive to {action}"
        ]
    # An archive left from when archiving was on is still checked, with a note.
    archive_of(d, 2)
    proc = subprocess.run(
        [*CONCLAVE, "archive", "verify", "--dir", str(d)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "archive OK: 2 records" in proc.stdout
    assert "note: archiving is off" in proc.stderr


def test_archiving_on_and_the_archive_gone_fails_verify(tmp_path: Path) -> None:
    d = tmp_path / "data"
    subprocess.run(
        [*CONCLAVE, "init", "--domain", "example.test", "--dir", str(d)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    config = d / "conclave.toml"
    text, count = re.subn(
        r"(?ms)^(\[archive\].*?^)enabled = false$", r"\1enabled = true", config.read_text(), count=1
    )
    assert count == 1
    config.write_text(text)
    proc = subprocess.run(
        [*CONCLAVE, "archive", "verify", "--dir", str(d)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "archive verify FAILED" in proc.stdout, proc.stderr
