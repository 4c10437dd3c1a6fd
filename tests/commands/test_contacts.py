"""`conclave contacts …` and `conclave privacy …` as real processes."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from .processes import ok, run


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("contacts") / "data"
    ok("init", "--domain", "example.test", "--dir", str(d), "--host", "127.0.0.1")
    for name in ("alice", "bob", "dave"):
        ok("user", "add", name, "--dir", str(d))
    return d


def rows(data: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data / "conclave.db") as db:
        return db.execute(sql).fetchall()


def test_contacts_lifecycle(data: Path) -> None:
    d = str(data)
    out = ok("contacts", "add", "alice", "bob", "--dir", d)
    assert out.strip() == "added sip:bob@example.test to group 'Contacts' of sip:alice@example.test"
    ok(
        "contacts",
        "add",
        "alice@example.test",
        "carol@partner.example",
        "--dir",
        d,
        "--group",
        "Partners",
    )
    ok("contacts", "add", "sip:alice@example.test", "sip:dave@example.test", "--dir", d)
    listing = ok("contacts", "list", "alice", "--dir", d)
    assert listing.splitlines() == [
        "Contacts\tsip:bob@example.test",
        "Contacts\tsip:dave@example.test",
        "Partners\tsip:carol@partner.example",
    ]
    ok("contacts", "add", "alice", "dave", "--dir", d, "--group", "Partners")  # moves
    ok("contacts", "remove", "alice", "bob", "--dir", d)
    assert ok("contacts", "list", "alice", "--dir", d).splitlines() == [
        "Partners\tsip:carol@partner.example",
        "Partners\tsip:dave@example.test",
    ]
    assert ok("contacts", "list", "bob", "--dir", d) == ""
    assert rows(data, "SELECT contact, group_name FROM contacts ORDER BY contact") == [
        ("sip:carol@partner.example", "Partners"),
        ("sip:dave@example.test", "Partners"),
    ]


def test_contacts_errors_are_one_line(data: Path, tmp_path: Path) -> None:
    d = str(data)
    assert one_line_error(run("contacts", "add", "alice", "nobody", "--dir", d)) == (
        "conclave: error: no such user: nobody@example.test"
    )
    assert "no such user: nobody@example.test" in one_line_error(
        run("contacts", "list", "nobody", "--dir", d)
    )
    assert "not a user of this deployment" in one_line_error(
        run("contacts", "add", "bob@partner.example", "alice", "--dir", d)
    )
    assert "own contact list" in one_line_error(run("contacts", "add", "bob", "bob", "--dir", d))
    assert "not on the contact list" in one_line_error(
        run("contacts", "remove", "bob", "alice", "--dir", d)
    )
    assert "invalid group name" in one_line_error(
        run("contacts", "add", "bob", "alice", "--dir", d, "--group", " ")
    )
    one_line_error(run("contacts", "add", "bob", "bad name!@x.test", "--dir", d))
    assert "not a Conclave data directory" in one_line_error(
        run("contacts", "list", "alice", "--dir", str(tmp_path / "missing"))
    )


def test_privacy_set_list_remove(data: Path) -> None:
    d = str(data)
    assert ok("privacy", "set", "bob", "alice", "blocked", "--dir", d).strip() == (
        "sip:bob@example.test: contact sip:alice@example.test is blocked"
    )
    out = ok("privacy", "set", "bob", "Partner.Example", "friends-family", "--dir", d)
    assert out.strip() == "sip:bob@example.test: domain partner.example is friends"
    ok("privacy", "set", "bob", "sip:carol@partner.example", "external", "--dir", d)
    ok("privacy", "set", "bob", "alice@example.test", "workgroup", "--dir", d)  # replaces
    for level in ("external", "colleagues", "friends"):
        ok("privacy", "set", "dave", "bob", level, "--dir", d)
    assert ok("privacy", "list", "bob", "--dir", d).splitlines() == [
        "partner.example\tfriends",
        "sip:alice@example.test\tworkgroup",
        "sip:carol@partner.example\texternal",
    ]
    ok("privacy", "remove", "bob", "partner.example", "--dir", d)
    ok("privacy", "remove", "bob", "alice", "--dir", d)
    assert ok("privacy", "list", "bob", "--dir", d).splitlines() == [
        "sip:carol@partner.example\texternal"
    ]
    assert ok("privacy", "list", "dave", "--dir", d).splitlines() == [
        "sip:bob@example.test\tfriends"
    ]


def test_privacy_errors_are_one_line(data: Path) -> None:
    d = str(data)
    assert "invalid privacy level 'besties'" in one_line_error(
        run("privacy", "set", "bob", "alice", "besties", "--dir", d)
    )
    assert "no such user: nobody@example.test" in one_line_error(
        run("privacy", "set", "bob", "nobody", "blocked", "--dir", d)
    )
    assert "no such user" in one_line_error(
        run("privacy", "set", "nobody", "alice", "blocked", "--dir", d)
    )
    assert "invalid domain" in one_line_error(
        run("privacy", "set", "bob", "bad..domain", "blocked", "--dir", d)
    )
    assert "no privacy rule" in one_line_error(
        run("privacy", "remove", "bob", "nowhere.example", "--dir", d)
    )


def test_a_case_variant_names_the_one_user(data: Path) -> None:
    d = str(data)
    out = ok("contacts", "add", "DAVE", "Alice", "--dir", d)
    expected = "added sip:alice@example.test to group 'Contacts' of sip:dave@example.test"
    assert out.strip() == expected
    ok("privacy", "set", "DAVE", "sip:BOB@example.test", "blocked", "--dir", d)
    contacts = rows(data, "SELECT contact FROM contacts WHERE contact LIKE '%alice%'")
    assert ("sip:alice@example.test",) in contacts and ("sip:Alice@example.test",) not in contacts
    targets = rows(data, "SELECT target FROM privacy_rules WHERE target LIKE '%bob%'")
    assert ("sip:bob@example.test",) in targets and ("sip:BOB@example.test",) not in targets
