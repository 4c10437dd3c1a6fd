"""The CA's CRL published over plain HTTP, and named in every certificate issued after.

A Standard Edition server with ``[web] enabled`` publishes ``/pki/ca.crl``
and ``/pki/ca.crt``; the CA records the URL, so a renewed server certificate
carries it as its CRL distribution point, and a revocation is visible at that
URL at once.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from .server import ConclaveServer, conclave

WEB = {"web": {"enabled": True, "crl_bind": "127.0.0.1:0", "bind": "127.0.0.1:0"}}


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def distribution_points(cert: x509.Certificate) -> list[str]:
    points = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    return [name.value for point in points for name in point.full_name or []]


def test_the_crl_is_published_and_named_by_renewed_certificates(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(transports="tls", config=WEB)
    event = server.wait_for(lambda e: e.get("event") == "crl listening")
    url = event["url"]  # named after [server] host, on the bound port
    assert url.startswith("http://") and url.endswith(f":{event['port']}/pki/ca.crl")
    server.wait_for(lambda e: e.get("event") == "CRL distribution point recorded")
    local = f"http://127.0.0.1:{event['port']}"

    status, content_type, body = fetch(local + "/pki/ca.crl")
    ca = x509.load_pem_x509_certificate(server.ca.read_bytes())
    crl = x509.load_der_x509_crl(body)
    assert (status, content_type) == (200, "application/pkix-crl")
    assert crl.is_signature_valid(ca.public_key()) and crl.issuer == ca.subject
    status, content_type, body = fetch(local + "/pki/ca.crt")
    assert (status, content_type) == (200, "application/pkix-cert")
    assert x509.load_der_x509_certificate(body) == ca

    # The certificate issued at init predates the URL; a renewal names it.
    cert_path = server.data_dir / "tls" / "server.crt"
    old = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
    conclave("certs", "renew", "server", "--dir", str(server.data_dir))
    server.wait_for(lambda e: e.get("event") == "certificate reloaded")
    renewed = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert distribution_points(renewed) == [url]

    # A revocation is at the URL at once (the old certificate, superseded by the renewal).
    conclave("certs", "revoke", f"{old:X}", "--dir", str(server.data_dir))
    _status, _type, body = fetch(local + "/pki/ca.crl")
    assert old in {r.serial_number for r in x509.load_der_x509_crl(body)}
