"""testssl.sh (Debian package `testssl.sh`, command `testssl`) against the SIP/TLS listener.

The scan runs protocols (-p), cipher categories (-s), forward secrecy (-f),
ciphers per protocol (-E), vulnerabilities (-U), server defaults (-S) and
preferences (-P): everything but the slow client simulations and the HTTP
header checks (our listener speaks SIP, not HTTP). About 30 s on two cores.
Assertions read the flat JSON (``--jsonfile``): nothing below TLS 1.2, only
AEAD ciphers with (EC)DHE, and no finding of severity MEDIUM or worse.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .server import ConclaveServer, conclave

pytestmark = pytest.mark.peers

SCAN_TIMEOUT = 300
"""A hard bound on the scan (it takes about 30 s); a hang fails instead of stalling CI."""

SEVERITY = {"OK": 0, "INFO": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
"""testssl's severities in order; WARN and DEBUG are notes about the scan itself."""

PUBLISHING = {"web": {"enabled": True, "crl_bind": "127.0.0.1:0", "bind": "127.0.0.1:0"}}
"""The CRL published over HTTP: the server's certificate names it (testssl rates a
certificate with neither a CRL nor an OCSP URI HIGH: ``cert_revocation``)."""


VULNERABILITIES = (
    "heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
    "CRIME_TLS", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM",
    "BEAST", "LUCKY13", "RC4",
)  # fmt: skip
"""The -U checks that apply to a non-HTTP TLS service; each must be reported."""

TLS12_AEAD_FS = re.compile(r"ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)")
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}


def find_testssl() -> str:
    """The testssl command; missing: a failure under CI=true, a skip otherwise."""
    path = shutil.which("testssl") or shutil.which("testssl.sh")
    if path is None:
        reason = (
            "testssl.sh is not installed (apt-get install testssl.sh; scripts/install-peers.sh)"
        )
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)  # outside CI only: under CI=true it failed above
    return path


def scan(
    server: ConclaveServer, out: Path, target: str | None = None, *, http: bool = False
) -> list[dict[str, Any]]:
    command = [
        find_testssl(),
        "--quiet", "--warnings", "batch", "--color", "0", "--nodns", "none",
        "--connect-timeout", "10", "--openssl-timeout", "10",
        "--add-ca", str(server.ca),
        "--jsonfile", str(out),
        "-p", "-s", "-f", "-E", "-U", "-S", "-P", *(["-h"] if http else []),
        target or server.target("tls"),
    ]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=SCAN_TIMEOUT, cwd=out.parent
    )
    # testssl's exit status counts findings; the JSON is what we judge.
    assert out.is_file(), f"testssl wrote no JSON (exit {proc.returncode}): {proc.stdout[-2000:]}"
    findings: list[dict[str, Any]] = json.loads(out.read_text())
    return findings


def published(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    """A server publishing its CRL, its certificate renewed to name it."""
    server = make_server(config=PUBLISHING)
    server.wait_for(lambda e: e.get("event") == "CRL distribution point recorded")
    # The certificate from init predates the URL: renewed, it names it.
    conclave("certs", "renew", "server", "--dir", str(server.data_dir))
    server.wait_for(lambda e: e.get("event") == "certificate reloaded")
    return server


def test_testssl_finds_nothing(make_server: Callable[..., ConclaveServer], tmp_path: Path) -> None:
    server = published(make_server)
    judge(scan(server, tmp_path / "testssl.json"))


def test_testssl_finds_nothing_on_https(
    make_server: Callable[..., ConclaveServer], tmp_path: Path
) -> None:
    server = published(make_server)
    port = server.wait_for(lambda e: e.get("event") == "web listening")["port"]
    findings = scan(server, tmp_path / "testssl.json", f"127.0.0.1:{port}", http=True)
    judge(findings)
    by_id = {f["id"]: f for f in findings}
    assert by_id["HSTS_time"]["severity"] == "OK", by_id.get("HSTS_time")


def judge(findings: list[dict[str, Any]]) -> None:
    by_id = {f["id"]: f for f in findings}

    fatal = [f for f in findings if f["severity"] == "FATAL"]
    assert not fatal, fatal
    assert "scanTime" in by_id and by_id["scanTime"]["severity"] != "WARN", by_id.get("scanTime")

    # Protocols: nothing below TLS 1.2; 1.2 and 1.3 offered.
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert by_id[old]["finding"].startswith("not offered"), by_id[old]
    assert by_id["TLS1_2"]["finding"].startswith("offered"), by_id["TLS1_2"]
    assert by_id["TLS1_3"]["finding"].startswith("offered"), by_id["TLS1_3"]

    # Ciphers: no weak category, only AEAD with forward secrecy.
    for weak in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"):
        assert by_id[f"cipherlist_{weak}"]["finding"] == "not offered", weak
    assert by_id["cipherlist_STRONG"]["finding"] == "offered"
    assert by_id["PFS"]["severity"] == "OK"
    offered = [f["finding"].split()[3] for f in findings if f["id"].startswith("cipher-tls")]
    tls12 = [f["finding"].split()[3] for f in findings if f["id"].startswith("cipher-tls1_2")]
    tls13 = [f["finding"].split()[3] for f in findings if f["id"].startswith("cipher-tls1_3")]
    assert offered and tls12 and tls13, offered
    assert len(tls12) + len(tls13) == len(offered), offered  # nothing from older protocols
    assert all(TLS12_AEAD_FS.fullmatch(name) for name in tls12), tls12
    assert set(tls13) <= TLS13_SUITES, tls13

    # Vulnerabilities: each check ran and found nothing.
    for vuln in VULNERABILITIES:
        assert vuln in by_id, f"{vuln} was not checked"
        assert SEVERITY.get(by_id[vuln]["severity"], 9) <= SEVERITY["INFO"], by_id[vuln]

    # And nothing anywhere rated MEDIUM or worse.
    serious = [f for f in findings if SEVERITY.get(f["severity"], 0) >= SEVERITY["MEDIUM"]]
    assert not serious, serious
    assert "http://" in by_id["cert_crlDistributionPoints"]["finding"], by_id.get(
        "cert_crlDistributionPoints"
    )


def test_missing_testssl_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true and testssl\.sh is not installed"):
        find_testssl()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        find_testssl()
