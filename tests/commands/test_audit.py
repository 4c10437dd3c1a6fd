"""`conclave audit`: exit status, text and JSON, --surface, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conclave.cli import main

from .test_topology import EXAMPLE


def conclave(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


@pytest.fixture
def default_install(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    assert conclave("init", "--domain", "example.test", "--dir", str(data)).exit_code == 0
    return data


def test_the_default_install_passes(default_install: Path) -> None:
    result = conclave("audit", "--dir", str(default_install))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Audited: {default_install}\n")
    assert "[MEDIUM] LOGGING-NO-CONTROLLER: No logging controller" in result.stdout
    assert "[HIGH]" not in result.stdout and "[CRITICAL]" not in result.stdout
    assert result.stdout.rstrip().endswith("1 medium, 1 low, 1 info.")


def test_a_high_finding_fails_with_every_field(default_install: Path) -> None:
    config = default_install / "conclave.toml"
    config.write_text(config.read_text().replace("udp = false", "udp = true"))
    result = conclave("audit", "--dir", str(default_install), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["failed"] is True
    [plain] = [f for f in data["findings"] if f["id"] == "TRANSPORT-PLAIN"]
    assert plain == {
        "id": "TRANSPORT-PLAIN",
        "severity": "high",
        "title": "Plain-text SIP (UDP or TCP) is on",
        "found": "plain SIP over UDP listens on 127.0.0.1:5060",
        "where": f"{default_install}/conclave.toml: transports.udp",
        "why": plain["why"],
        "fix": plain["fix"],
    }
    assert plain["why"] and plain["fix"]
    assert data["findings"][0]["id"] == "TRANSPORT-PLAIN"  # worst first


def test_surface_of_a_data_directory(default_install: Path) -> None:
    data = json.loads(
        conclave("audit", "--dir", str(default_install), "--surface", "--json").stdout
    )
    [host] = data["surface"]
    assert host["host"] == "127.0.0.1"
    assert [(e["protocol"], e["port"], e["service"]) for e in host["exposures"]] == [
        ("tcp", 5061, "SIP/TLS")
    ]
    assert host["exposures"][0]["reachable_from"] == "this host only"
    assert "SUBSCRIBE" in host["sip_methods"] and "REGISTER" in host["sip_methods"]
    assert host["event_packages"] == ["presence", "presence.winfo"]
    assert host["tls_versions"] == ["TLS 1.2", "TLS 1.3"]
    config = default_install / "conclave.toml"
    marker = "presence.winfo)\nenabled = "
    config.write_text(config.read_text().replace(marker + "true", marker + "false"))
    text = conclave("audit", "--dir", str(default_install), "--surface").stdout
    assert (
        "SIP methods: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, PRACK\n"
        in text
    )
    assert "event packages: (none)" in text


def test_topology_surface_and_findings(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(EXAMPLE.replace("users = 200", "users = 200\nfederation = true"))
    result = conclave("audit", "--topology", str(path), "--surface")
    assert result.exit_code == 0, result.output
    assert "fe1 (internal; roles: frontend)" in result.stdout
    assert "TCP 127.0.0.1:5061 SIP/TLS [frontend] from internal network" in result.stdout
    assert "log1 (internal; roles: logging-controller)" in result.stdout
    assert "TCP 127.0.0.2:6514 syslog/TLS [logging-controller]" in result.stdout
    insecure = EXAMPLE.replace(
        'roles = ["frontend"]', 'roles = ["frontend"]\nadmin = "127.0.0.1:9100"'
    )
    insecure = insecure.replace(
        'edition = "standard"', 'edition = "standard"\ntransports = ["tls", "udp"]'
    )
    path.write_text(insecure)
    result = conclave("audit", "--topology", str(path))
    assert result.exit_code == 1
    assert "[HIGH] TRANSPORT-PLAIN" in result.stdout
    assert f"where: {path}: pools.se1.transports" in result.stdout


def test_usage_errors(tmp_path: Path) -> None:
    for args, message in (
        ((), "give --topology FILE and/or --dir DATA"),
        (
            ("--dir", str(tmp_path)),
            f"{tmp_path} is not a Conclave data directory (no conclave.toml)",
        ),
        (("--topology", str(tmp_path / "t.toml")), f"{tmp_path / 't.toml'}: file not found"),
    ):
        result = conclave("audit", *args)
        assert result.exit_code == 1
        assert result.stderr == f"conclave: error: {message}\n"
