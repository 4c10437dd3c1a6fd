"""Topologies as plain data, written to temporary files; certificates made on demand."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conclave.topology.document import dumps_toml

Doc = dict[str, Any]

BASE: Doc = {
    "organisation": {"name": "Example Ltd", "sip_domains": ["example.test"]},
    "requirements": {"users": 200},
    "sites": {"hq": {}, "dr": {}},
    "pools": {
        "se1": {
            "site": "hq",
            "edition": "standard",
            "members": [
                {
                    "name": "fe1",
                    "fqdn": "fe1.example.test",
                    "address": "10.0.0.1",
                    "roles": ["frontend"],
                }
            ],
        },
        "logs": {
            "site": "hq",
            "edition": "enterprise",
            "members": [
                {
                    "name": "log1",
                    "fqdn": "log1.example.test",
                    "address": "10.0.0.5",
                    "roles": ["logging-controller"],
                }
            ],
        },
    },
    "policies": {"lockout": {"threshold": 10, "duration": "10m", "directory_threshold": 50}},
}
"""A small, valid, secure deployment: a Standard Edition server and a logging controller."""


def base() -> Doc:
    return copy.deepcopy(BASE)


def host(name: str, address: str, roles: list[str], **extra: Any) -> Doc:
    return {
        "name": name,
        "fqdn": f"{name}.example.test",
        "address": address,
        "roles": roles,
    } | extra


def edge_host(
    name: str = "edge1", internal: str = "172.16.0.10", external: str = "203.0.113.10"
) -> Doc:
    return host(
        name,
        internal,
        ["edge"],
        edge={
            "internal": {"fqdn": f"{name}.example.test", "address": internal},
            "external": {"fqdn": "sip.example.test", "address": external},
        },
    )


def with_edge(doc: Doc, *, remote: bool = True) -> Doc:
    doc["pools"]["edge"] = {"site": "hq", "edition": "enterprise", "members": [edge_host()]}
    doc["policies"]["external_access"] = {"remote_users": remote}
    doc["requirements"]["remote_access"] = remote
    return doc


def enterprise(doc: Doc, name: str = "ee1", site: str = "hq", base_address: str = "10.1.0") -> Doc:
    doc["pools"][name] = {
        "site": site,
        "edition": "enterprise",
        "fqdn": f"{name}.example.test",
        "database": f"postgresql://conclave@db.example.test/{name}",
        "members": [host(f"{name}-fe1", f"{base_address}.1", ["frontend"])],
    }
    return doc


def write(directory: Path, doc: Doc, name: str = "topology.toml") -> Path:
    path = directory / name
    path.write_text(dumps_toml(doc), encoding="utf-8")
    return path


def make_certificate(
    path: Path,
    names: list[str],
    *,
    issuer: tuple[x509.Certificate, Any] | None = None,
    key: str = "ec",
    bits: int = 2048,
    days: float = 365,
) -> tuple[x509.Certificate, Any]:
    """A leaf for ``names`` (self-signed unless ``issuer`` = (cert, key)); written as PEM."""
    private: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=bits)
        if key == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, private)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=max(1.0, -days + 1)))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(signing_key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, private
