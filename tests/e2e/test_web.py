"""The HTTPS web listener of a Standard Edition server (``[web] enabled``).

It serves with the server's own certificate (and its reloads) and puts the
security headers on every answer, refusals included.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable

from cryptography import x509

from .server import ConclaveServer, conclave

WEB = {"web": {"enabled": True, "crl_bind": "127.0.0.1:0", "bind": "127.0.0.1:0"}}


def https(server: ConclaveServer, port: int, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    context = ssl.create_default_context(cafile=str(server.ca))
    context.check_hostname = False  # the certificate names the server, not 127.0.0.1's name
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def served_serial(server: ConclaveServer, port: int) -> int:
    context = ssl.create_default_context(cafile=str(server.ca))
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_https_serves_with_the_server_certificate_and_security_headers(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(transports="tls", config=WEB)
    port = int(server.wait_for(lambda e: e.get("event") == "web listening")["port"])

    response, body = https(server, port, "/pki/ca.crt")
    assert response.status == 200
    assert x509.load_der_x509_certificate(body) == x509.load_pem_x509_certificate(
        server.ca.read_bytes()
    )
    for name in (
        "Strict-Transport-Security", "Content-Security-Policy", "X-Frame-Options",
        "X-Content-Type-Options", "Referrer-Policy",
    ):  # fmt: skip
        assert response.getheader(name), name
    assert "frame-ancestors 'none'" in (response.getheader("Content-Security-Policy") or "")

    refused, body = https(server, port, "/nothing-here")
    assert refused.status == 404 and refused.getheader("Strict-Transport-Security")
    assert refused.getheader("Content-Type") == "application/problem+json"

    # A renewal reaches the web listener as it reaches SIP/TLS: one certificate.
    before = served_serial(server, port)
    conclave("certs", "renew", "server", "--dir", str(server.data_dir))
    server.wait_for(lambda e: e.get("event") == "certificate reloaded" and e.get("trigger"))
    after = served_serial(server, port)
    current = x509.load_pem_x509_certificate((server.data_dir / "tls" / "server.crt").read_bytes())
    assert after != before and after == current.serial_number


def test_an_http_flood_bans_the_source_for_sip_too(
    make_server: Callable[..., ConclaveServer],
) -> None:
    config = {**WEB, "limits": {"requests_per_second": 0.1, "burst": 5}}
    server = make_server(transports="tls", config=config)
    port = int(server.wait_for(lambda e: e.get("event") == "web listening")["port"])
    statuses = []
    for _ in range(8):
        try:
            response, _body = https(server, port, "/pki/ca.crt")
        except (OSError, http.client.HTTPException):
            break  # banned: the connection is closed unanswered
        statuses.append(response.status)
        if response.status == 429:
            assert response.getheader("Retry-After")
    assert 429 in statuses and statuses[0] == 200
    banned = server.wait_for(lambda e: e.get("event") == "source banned")
    assert banned["source"] == "127.0.0.1" and banned["reason"] == "request rate"
    # One mechanism: the same source is refused on SIP/TLS before any handshake.
    context = ssl.create_default_context(cafile=str(server.ca))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", server.ports["tls"]), timeout=10) as raw:
        try:
            context.wrap_socket(raw).close()
            refused = False
        except (OSError, ssl.SSLError):
            refused = True
    assert refused
