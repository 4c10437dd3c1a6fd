"""Which certificates are in use, `check`'s verdicts, and importing public certificates."""

from __future__ import annotations

import datetime as dt
import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from conclave.config import Config, write_default_config
from conclave.pki import CertificateAuthority, IssuedCertificate, PkiError, create_ca
from conclave.pki.crl import build_crl, write_crl
from conclave.pki.inventory import check, import_certificate, in_use, listing


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Data:
    dir: Path
    config: Config
    ca: CertificateAuthority

    def issue_server(self, names: list[str], **kwargs: object) -> None:
        issued = self.ca.issue_server(names, ["127.0.0.1"], **kwargs)  # type: ignore[arg-type]
        issued.write(self.dir / "tls" / "server.crt", self.dir / "tls" / "server.key")


@pytest.fixture
def data(tmp_path: Path) -> Data:
    config = write_default_config(tmp_path, domain="example.test", host="127.0.0.1")
    ca = create_ca(tmp_path / "ca", common_name="Conclave CA for example.test")
    d = Data(tmp_path, config, ca)
    d.issue_server(["example.test", "sip.example.test"])
    return d


@pytest.fixture
def public(tmp_path: Path) -> CertificateAuthority:
    return create_ca(tmp_path / "public", common_name="Public Root CA")


def test_a_fresh_deployment_checks_clean(data: Data) -> None:
    assert check(data.dir, data.config, 30, now()) == []
    roles = [item.role for item in in_use(data.dir, data.config)]
    assert roles == ["CA", "server"]


def test_check_reports_expiry_within_days(data: Data) -> None:
    data.issue_server(["example.test", "sip.example.test"], lifetime=dt.timedelta(days=12))
    [problem] = check(data.dir, data.config, 30, now())
    assert problem.startswith("server certificate tls/server.crt: expires in 12.0 days")
    assert check(data.dir, data.config, 10, now()) == []
    [problem] = check(data.dir, data.config, 10, now() + dt.timedelta(days=13))
    assert problem.startswith("server certificate tls/server.crt: expired on ")


def test_check_reports_missing_names(data: Data) -> None:
    data.issue_server(["example.test"])
    assert check(data.dir, data.config, 30, now()) == [
        "server certificate tls/server.crt: does not cover required name sip.example.test"
    ]


def test_check_reports_untrusted_chain(data: Data, public: CertificateAuthority) -> None:
    public.issue_server(["example.test", "sip.example.test"], ["127.0.0.1"]).write(
        data.dir / "tls" / "server.crt", data.dir / "tls" / "server.key"
    )
    [problem] = check(data.dir, data.config, 30, now())
    assert problem.startswith("server certificate tls/server.crt: does not chain to a trusted")


def test_check_reports_revoked_and_crl_problems(data: Data) -> None:
    serial = next(e.serial for e in data.ca.index.entries())
    data.ca.revoke(serial)
    assert check(data.dir, data.config, 30, now()) == [
        f"server certificate tls/server.crt: is revoked (serial {serial:X})"
    ]
    ca = data.ca
    stale = build_crl(ca.certificate, ca.private_key, [], number=9, now=now() - dt.timedelta(60))
    write_crl(data.ca.crl_path, stale)
    [problem] = check(data.dir, data.config, 30, now())
    assert problem.startswith("CRL ca/crl.pem: expired on ")
    data.ca.crl_path.unlink()
    [problem] = check(data.dir, data.config, 30, now())
    assert problem == f"CRL ca/crl.pem: CRL not found: {data.ca.crl_path}"


def test_check_reports_key_mismatch_and_missing_files(data: Data) -> None:
    other = data.ca.issue_server(["x.test"])
    (data.dir / "tls" / "server.key").write_bytes(other.key_pem())
    [problem] = check(data.dir, data.config, 30, now())
    assert "does not match certificate" in problem
    (data.dir / "tls" / "server.crt").unlink()
    [problem] = check(data.dir, data.config, 30, now())
    assert problem.startswith("server certificate tls/server.crt: certificate not found")


def test_check_reports_expiring_ca(tmp_path: Path) -> None:
    config = write_default_config(tmp_path, domain="example.test", host="127.0.0.1")
    ca = create_ca(tmp_path / "ca", common_name="Short CA", days=20)
    ca.issue_server(["example.test", "sip.example.test"], ["127.0.0.1"]).write(
        tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key"
    )
    problems = check(tmp_path, config, 30, now())
    assert problems[0].startswith("CA certificate ca/ca.crt: expires in 20.0 days")
    # the server certificate is clipped to the CA's life, so it is caught too
    assert problems[1].startswith("server certificate tls/server.crt: expires in 20.0 days")


def test_import_and_check(
    data: Data, public: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = public.issue_server(["edge.example.test", "*.edge.example.test"])
    edge.write(tmp_path / "edge.crt", tmp_path / "edge.key")
    result = import_certificate(data.dir, tmp_path / "edge.crt", tmp_path / "edge.key", now=now())
    assert result.label == "edge.example.test"
    assert result.names == ("edge.example.test", "*.edge.example.test")
    stored = data.dir / "tls" / "imported" / "edge.example.test"
    assert stat.S_IMODE((stored / "key.pem").stat().st_mode) == 0o600
    assert json.loads((stored / "meta.json").read_text())["names"] == list(result.names)
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    [problem] = check(data.dir, data.config, 30, now())
    assert problem.startswith(
        "imported edge.example.test certificate tls/imported/edge.example.test/cert.pem: "
        "does not chain to a trusted root"
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(public.cert_path))
    assert check(data.dir, data.config, 30, now()) == []
    rows = {row.role: row for row in listing(data.dir, data.config, now())}
    row = rows["imported edge.example.test"]
    assert row.issuer == "CN=Public Root CA" and row.status == "valid"
    assert row.sans == ("DNS:edge.example.test", "DNS:*.edge.example.test")


def leaf_only(issued: IssuedCertificate, cert: Path, key: Path) -> None:
    """Write the leaf without its chain, as public CAs often deliver it."""
    cert.write_bytes(issued.certificate.public_bytes(Encoding.PEM))
    key.write_bytes(issued.key_pem())


def test_import_with_chain_and_names(
    data: Data, public: CertificateAuthority, tmp_path: Path
) -> None:
    leaf_only(public.issue_server(["edge.example.test"]), tmp_path / "l.crt", tmp_path / "l.key")
    (tmp_path / "chain.pem").write_bytes(public.certificate_pem())
    result = import_certificate(
        data.dir,
        tmp_path / "l.crt",
        tmp_path / "l.key",
        chain_path=tmp_path / "chain.pem",
        names=["edge.example.test"],
        label="Edge",
        now=now(),
    )
    assert result.label == "edge"
    stored = (result.directory / "cert.pem").read_bytes()
    assert stored.count(b"BEGIN CERTIFICATE") == 2


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mismatch", "does not match certificate"),
        ("name", "does not cover www.example.test"),
        ("chain", "did not issue"),
        ("ca", "is a CA certificate"),
        ("missing", "certificate not found"),
    ],
)
def test_import_refusals(
    data: Data, public: CertificateAuthority, tmp_path: Path, case: str, message: str
) -> None:
    cert, key = tmp_path / "edge.crt", tmp_path / "edge.key"
    leaf_only(public.issue_server(["edge.example.test"]), cert, key)
    kwargs: dict[str, object] = {}
    if case == "mismatch":
        key.write_bytes(public.issue_server(["x.test"]).key_pem())
    elif case == "name":
        kwargs["names"] = ["www.example.test"]
    elif case == "chain":
        kwargs["chain_path"] = data.ca.cert_path  # not the issuer
    elif case == "ca":
        cert = public.cert_path
        key = public.directory / "ca.key"
    elif case == "missing":
        cert = tmp_path / "nope.crt"
    with pytest.raises(PkiError, match=message):
        import_certificate(data.dir, cert, key, now=now(), **kwargs)  # type: ignore[arg-type]


def test_import_refuses_expired(data: Data, public: CertificateAuthority, tmp_path: Path) -> None:
    edge = public.issue_server(["edge.example.test"], lifetime=dt.timedelta(minutes=1))
    edge.write(tmp_path / "edge.crt", tmp_path / "edge.key")
    with pytest.raises(PkiError, match="expired on"):
        import_certificate(
            data.dir,
            tmp_path / "edge.crt",
            tmp_path / "edge.key",
            now=now() + dt.timedelta(hours=1),
        )


def test_listing_shows_every_issued_certificate(data: Data) -> None:
    client = data.ca.issue_client("alice", "example.test")
    data.ca.revoke(client.serial)
    data.ca.issue_server(["fe2.example.test"], lifetime=dt.timedelta(days=3))
    rows = listing(data.dir, data.config, now())
    by_role = {row.role: row for row in rows}
    assert by_role["CA"].status == "valid" and by_role["server"].status == "valid"
    assert by_role["client alice@example.test"].status == "revoked"
    assert by_role["issued server"].status == "expiring in 3 days"
    assert all(row.fingerprint for row in rows)
    sans = by_role["server"].to_json()["sans"]
    assert sans == ["DNS:example.test", "DNS:sip.example.test", "IP:127.0.0.1"]
