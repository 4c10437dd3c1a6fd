"""Shared fixtures: a CA and server certificates in temporary directories, a log recorder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conclave.pki import CertificateAuthority, IssuedCertificate, create_ca
from conclave.pki.reload import TlsFiles


@dataclass(frozen=True)
class ServerFiles:
    """Paths of a CA and a server certificate issued by it."""

    ca: CertificateAuthority
    ca_cert: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def server_files(pki_dir: Path) -> ServerFiles:
    ca = create_ca(pki_dir / "ca", common_name="Conclave Test CA")
    leaf = ca.issue_server(["sip.example.test"], ["127.0.0.1"])
    leaf.write(pki_dir / "tls" / "server.crt", pki_dir / "tls" / "server.key")
    return ServerFiles(
        ca=ca,
        ca_cert=ca.cert_path,
        cert=pki_dir / "tls" / "server.crt",
        key=pki_dir / "tls" / "server.key",
    )


class RecordingLogger:
    """Stands in for a structlog logger: keeps every event for assertions."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self.events.append({"level": level, "event": event, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, **fields)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


REQUIRED = ("sip.example.test", "example.test", "127.0.0.1")
"""What the deployment fixture's server certificate must cover."""


@dataclass
class Deployment:
    """A data directory with a CA, its CRL and a server certificate for REQUIRED."""

    root: Path
    ca: CertificateAuthority

    @property
    def cert(self) -> Path:
        return self.root / "tls" / "server.crt"

    @property
    def key(self) -> Path:
        return self.root / "tls" / "server.key"

    def files(self, *, client_auth: bool = False, status: bool = False) -> TlsFiles:
        return TlsFiles(
            cert=self.cert,
            key=self.key,
            ca=self.ca.cert_path,
            crl=self.ca.crl_path,
            required=REQUIRED,
            client_auth=client_auth,
            status=self.root / "tls-status.json" if status else None,
        )

    def issue(self, names: tuple[str, ...] = REQUIRED, **kwargs: Any) -> IssuedCertificate:
        dns = [n for n in names if not n[0].isdigit()]
        ips = [n for n in names if n[0].isdigit()]
        return self.ca.issue_server(dns, ips, **kwargs)

    def install(self, issued: IssuedCertificate) -> IssuedCertificate:
        issued.write(self.cert, self.key)
        return issued


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    ca = create_ca(tmp_path / "ca", common_name="Conclave Test CA")
    dep = Deployment(tmp_path, ca)
    dep.install(dep.issue())
    return dep
