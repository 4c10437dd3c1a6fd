"""The rules a certificate must pass: names, validity, chain, revocation, key match."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conclave.pki import create_ca, describe
from conclave.pki.validate import (
    assess_pair,
    covers,
    dns_matches,
    required_names,
    system_roots,
    trust_roots,
)
from tests.pki.conftest import REQUIRED, Deployment


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_required_names() -> None:
    assert required_names("SIP1.Example.test.", "Example.Test") == (
        "sip1.example.test",
        "example.test",
        "sip.example.test",
    )
    assert required_names("sip.example.test", "example.test") == (
        "sip.example.test",
        "example.test",
    )
    assert required_names("127.0.0.1", "localhost") == ("127.0.0.1", "localhost", "sip.localhost")


@pytest.mark.parametrize(
    ("pattern", "name", "ok"),
    [
        ("sip.example.test", "sip.example.test", True),
        ("SIP.example.test", "sip.EXAMPLE.test.", True),
        ("*.example.test", "sip.example.test", True),
        ("*.example.test", "example.test", False),
        ("*.example.test", "a.sip.example.test", False),
        ("*.test", "example.test", False),  # no wildcard directly under a TLD-like label
        ("s*.example.test", "sip.example.test", False),
        ("sip.example.test", "sip.example.tes", False),
    ],
)
def test_dns_matches(pattern: str, name: str, ok: bool) -> None:
    assert dns_matches(pattern, name) is ok


def test_covers_ips_only_by_ip_san(deployment: Deployment) -> None:
    info = describe(deployment.issue(("sip.example.test", "127.0.0.1")).certificate)
    assert covers(info, "127.0.0.1") and covers(info, "sip.example.test")
    assert not covers(info, "127.0.0.2") and not covers(info, "example.test")


def assess(deployment: Deployment, **kwargs: object) -> tuple[str, ...]:
    options: dict[str, object] = {
        "ca": deployment.ca.certificate,
        "required": REQUIRED,
        "now": now(),
    }
    options.update(kwargs)
    return assess_pair(deployment.cert, deployment.key, **options).problems  # type: ignore[arg-type]


def test_good_pair_has_no_problems(deployment: Deployment) -> None:
    assert assess(deployment) == ()


def test_every_problem_is_listed(deployment: Deployment, tmp_path: Path) -> None:
    stranger = create_ca(tmp_path / "s", common_name="Stranger")
    stranger.issue_server(["other.test"]).write(deployment.cert, tmp_path / "unused.key")
    problems = assess(deployment)
    assert problems[0].startswith("key ") and "does not match certificate" in problems[0]
    assert problems[1].startswith("does not chain to a trusted root")
    assert problems[2] == (
        "does not cover required names sip.example.test, example.test, 127.0.0.1"
    )


def test_expiry_window_and_expired(deployment: Deployment) -> None:
    deployment.install(deployment.issue(lifetime=dt.timedelta(days=10)))
    [problem] = assess(deployment, expiring_within=dt.timedelta(days=30))
    assert problem.startswith("expires in 10.0 days") and "within the 30-day threshold" in problem
    assert assess(deployment, expiring_within=dt.timedelta(days=5)) == ()
    [problem] = assess(deployment, now=now() + dt.timedelta(days=11))
    assert problem.startswith("expired on ")
    [problem] = assess(deployment, now=now() - dt.timedelta(days=1))
    assert problem.startswith("not valid until ")


def test_revoked(deployment: Deployment) -> None:
    from conclave.pki.crl import load_crl

    issued = deployment.install(deployment.issue())
    deployment.ca.revoke(issued.serial)
    crl = load_crl(deployment.ca.crl_path, deployment.ca.certificate)
    assert assess(deployment, crl=crl) == (f"is revoked (serial {issued.serial:X})",)


def test_ca_certificate_is_not_a_server_certificate(deployment: Deployment) -> None:
    problems = assess_pair(
        deployment.ca.cert_path, None, ca=deployment.ca.certificate, required=REQUIRED, now=now()
    ).problems
    assert "is a CA certificate, not a server certificate" in problems


def test_unreadable_files(deployment: Deployment, tmp_path: Path) -> None:
    verdict = assess_pair(tmp_path / "nope.crt", deployment.key, ca=None, now=now())
    assert verdict.candidate is None
    assert verdict.problems == (f"certificate not found: {tmp_path / 'nope.crt'}",)
    deployment.key.write_text("garbage")
    verdict = assess_pair(deployment.cert, deployment.key, ca=None, now=now())
    assert verdict.reason == f"{deployment.key} does not contain a readable PEM private key"


def test_public_certificates_chain_to_system_roots(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = create_ca(tmp_path / "public", common_name="Public Root")
    public.issue_server(["edge.example.test"]).write(deployment.cert, deployment.key)
    required = ("edge.example.test",)
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    assert "does not chain" in assess(deployment, required=required)[0]
    monkeypatch.setenv("SSL_CERT_FILE", str(public.cert_path))
    assert [c.subject for c in system_roots()] == [public.certificate.subject]
    assert assess(deployment, required=required) == ()
    # Our own certificates must chain to our CA alone, never to system roots.
    roots = trust_roots(deployment.ca.certificate, deployment.ca.certificate.subject)
    assert roots == [deployment.ca.certificate]
