"""The errors a new user meets first, as real processes: one line on stderr, no
traceback, a non-zero exit; and the listing commands' ``--json``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conclave.config import load_config

from .processes import ok, run


def one_line_error(proc: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("conclave: error: "), lines[0]
    return lines[0].removeprefix("conclave: error: ")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("first-errors") / "data"
    ok("init", "--domain", "example.test", "--dir", str(d), "--host", "127.0.0.1")
    ok("user", "add", "alice", "--dir", str(d), "--password-stdin", stdin="Wonder-Land-123456\n")
    ok("user", "add", "bob", "--dir", str(d))
    ok("user", "disable", "bob", "--dir", str(d))
    return d


# -- an option's value is never another option ---------------------------------------------


def test_client_certificate_without_a_user_names_what_is_missing(data: Path) -> None:
    message = one_line_error(run("certs", "issue", "--client", "--dir", str(data)), status=2)
    assert message == "--client takes a value (--client USER), not the option --dir"
    assert not (data / "tls" / "clients").exists() or not any((data / "tls" / "clients").iterdir())
    # The intended command works, the option in either place.
    assert "issued client certificate" in ok(
        "certs", "issue", "--client", "alice", "--dir", str(data)
    )
    assert "issued client certificate" in ok(
        "certs", "issue", "--dir", str(data), "--client", "alice"
    )


def test_every_value_option_refuses_an_option_as_its_value(data: Path) -> None:
    message = one_line_error(run("certs", "issue", "--dir", str(data), "--host", "--ip=::1"), 2)
    assert message == "--host takes a value (--host FQDN), not the option --ip=::1"
    message = one_line_error(run("user", "list", "--dir", "--json"), status=2)
    assert message == "--dir takes a value (--dir DATA_DIR), not the option --json"


def test_usage_errors_are_one_line(data: Path) -> None:
    message = one_line_error(run("certs", "issue", "--client", "alice"), status=2)
    assert message.startswith("Missing option '--dir'")
    assert message.endswith("certs issue --help`)")
    message = one_line_error(run("user", "list", "--dir", str(data), "--bogus"), status=2)
    assert message.startswith("No such option '--bogus'")


# -- certs check --days ------------------------------------------------------------------------


@pytest.mark.parametrize("days", ["abc", "-1", "nan", ""])
def test_check_days_says_what_is_expected(data: Path, days: str) -> None:
    message = one_line_error(run("certs", "check", "--dir", str(data), "--days", days), status=2)
    assert message.startswith(
        f"Invalid value for '--days': expected a number of days, 0 or more "
        f"(such as 30 or 0.5), not {days!r}"
    ), message


def test_validity_days_say_what_is_expected(data: Path) -> None:
    proc = run("certs", "issue", "--dir", str(data), "--days", "1.5")
    message = one_line_error(proc, status=2)
    assert message.startswith(
        "Invalid value for '--days': expected a whole number of days, 1 or more (such as 30), "
        "not '1.5'"
    ), message


def test_check_days_takes_fractions(data: Path) -> None:
    assert ok("certs", "check", "--dir", str(data), "--days", "0.5").startswith(
        "ok: every certificate in use is valid for more than 0.5 days"
    )


# -- --json on the listing commands ------------------------------------------------------------


def test_user_list_json(data: Path) -> None:
    users = json.loads(ok("user", "list", "--dir", str(data), "--json"))
    assert [(u["name"], u["address"], u["state"]) for u in users] == [
        ("alice", "alice@example.test", "enabled"),
        ("bob", "bob@example.test", "disabled"),
    ]
    assert all(u["created"] for u in users)
    plain = ok("user", "list", "--dir", str(data)).splitlines()
    assert [line.split("\t")[:2] for line in plain] == [
        ["alice@example.test", "enabled"],
        ["bob@example.test", "disabled"],
    ]


def test_certs_check_json(data: Path) -> None:
    report = json.loads(ok("certs", "check", "--dir", str(data), "--json"))
    assert report == {"ok": True, "days": 30, "problems": []}
    # Everything expires within ten years: every certificate is a problem, exit 1.
    proc = run("certs", "check", "--dir", str(data), "--json", "--days", "36500")
    assert proc.returncode == 1
    failed = json.loads(proc.stdout)
    assert failed["ok"] is False and failed["days"] == 36500
    assert any("within the 36500-day threshold" in p for p in failed["problems"])


# -- init --admin: monitoring on at a known address -----------------------------------------


def test_init_admin_turns_monitoring_on(tmp_path: Path) -> None:
    d = tmp_path / "data"
    out = ok("init", "--domain", "example.test", "--dir", str(d), "--admin", "127.0.0.1:9464")
    assert "  Monitoring: http://127.0.0.1:9464/metrics, /health and /ready" in out.splitlines()
    admin = load_config(d).admin
    assert admin.enabled and admin.bind == "127.0.0.1:9464"
    assert not load_config(_plain(tmp_path)).admin.enabled  # off unless asked for


def _plain(tmp_path: Path) -> Path:
    d = tmp_path / "plain"
    ok("init", "--domain", "example.test", "--dir", str(d))
    return d


def test_init_admin_bad_address_writes_nothing(tmp_path: Path) -> None:
    d = tmp_path / "data"
    message = one_line_error(
        run("init", "--domain", "example.test", "--dir", str(d), "--admin", "9464")
    )
    assert message == (
        "--admin: must be HOST:PORT such as 127.0.0.1:9464 (IPv6 as [::1]:9464), not '9464'"
    )
    assert not d.exists()
