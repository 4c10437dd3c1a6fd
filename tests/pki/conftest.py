"""Shared fixtures: a CA and a server certificate in a temporary directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from conclave.pki import CertificateAuthority, create_ca


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
