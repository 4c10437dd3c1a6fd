"""The CA's publication point: its CRL and certificate over plain HTTP.

``[web] enabled = true`` opens it on ``[web] crl_bind``. Two fixed paths,
``GET`` and ``HEAD`` only, nothing else (every other path is a 404 problem
document):

* ``/pki/ca.crl``: the current CRL, DER (``application/pkix-crl``, RFC 2585),
  re-read whenever the CA publishes a new one;
* ``/pki/ca.crt``: the CA certificate, DER (``application/pkix-cert``), the
  trust anchor a client or a browser user installs.

Plain HTTP on purpose: both are signed or self-signed public documents, and a
client checking revocation must not need TLS to do it (RFC 5280 §4.2.1.13).
The URL of the CRL is recorded in the CA (:func:`conclave.pki.ca.set_crl_urls`),
so every certificate it issues from then on names it as its CRL distribution
point.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from fastapi.responses import Response

from conclave.pki.ca import CA_CERT_FILE, CA_KEY_FILE, set_crl_urls
from conclave.pki.crl import CRL_FILE
from conclave.pki.errors import PkiError
from conclave.web.http import HttpLimits, HttpListener
from conclave.web.pages import problem, read_only_app

log = structlog.get_logger("conclave.web")

CRL_PATH: Final = "/pki/ca.crl"
CA_PATH: Final = "/pki/ca.crt"

LIMITS: Final = HttpLimits(
    max_connections=64, listen_backlog=64, max_head=4 * 1024, head_timeout=5.0,
    connection_timeout=15.0,
)  # fmt: skip
"""Every relying party fetches the CRL now and then, once per nextUpdate at
most; 64 at once and a 4 KiB head are plenty, and nothing here is slow."""

HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


class _Document:
    """A file served as DER, converted again only when the file changes."""

    def __init__(self, path: Path, *, certificate: bool) -> None:
        self.path = path
        self._is_cert = certificate
        self._stamp: tuple[int, int] | None = None
        self._der = b""

    def der(self) -> bytes:
        stat = os.stat(self.path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            data = self.path.read_bytes()
            if self._is_cert:
                der = x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
            else:
                crl = x509.load_pem_x509_crl(data)
                der = crl.public_bytes(serialization.Encoding.DER)
            self._der, self._stamp = der, stamp
        return self._der


def publication_app(ca_dir: Path) -> FastAPI:
    """The two documents of the CA in ``ca_dir``."""
    crl = _Document(ca_dir / CRL_FILE, certificate=False)
    ca = _Document(ca_dir / CA_CERT_FILE, certificate=True)
    app = read_only_app(f"only {CRL_PATH} and {CA_PATH} are published here", HEADERS)

    def serve(document: _Document, media_type: str) -> Response:
        try:
            body = document.der()
        except (OSError, ValueError) as exc:
            log.error("publication unavailable", path=str(document.path), reason=str(exc))
            return problem(503, "not available now", HEADERS)
        return Response(body, media_type=media_type, headers=HEADERS)

    @app.api_route(CRL_PATH, methods=["GET", "HEAD"])
    async def crl_document() -> Response:
        return serve(crl, "application/pkix-crl")

    @app.api_route(CA_PATH, methods=["GET", "HEAD"])
    async def ca_document() -> Response:
        return serve(ca, "application/pkix-cert")

    return app


def crl_url_for(host: str, port: int) -> str:
    """The default CRL URL for a server named ``host`` publishing on ``port``."""
    where = f"[{host}]" if ":" in host else host
    return f"http://{where}{'' if port == 80 else f':{port}'}{CRL_PATH}"


def record_crl_url(ca_dir: Path, url: str) -> bool:
    """Make ``url`` the CA's CRL distribution point, when this host holds the CA key.

    Returns whether it changed. A host without the key (a pool member whose CA
    lives elsewhere) records nothing: the CA's own host does.
    """
    if not (ca_dir / CA_KEY_FILE).exists():
        return False
    try:
        changed = set_crl_urls(ca_dir, [url])
    except PkiError as exc:
        log.warning("CRL distribution point not recorded", url=url, reason=str(exc))
        return False
    if changed:
        log.info("CRL distribution point recorded", url=url)
    return changed


class Publication:
    """The running publication point: ``await start()``, later ``await stop()``."""

    def __init__(self, ca_dir: Path, host: str, port: int, url: str = "", **guarded: Any) -> None:
        """``guarded``: the per-source guard arguments of :class:`HttpListener`."""
        self.ca_dir, self.host, self.port, self.url = ca_dir, host, port, url
        self._listener = HttpListener(
            publication_app(ca_dir), host, port, name="crl", limits=LIMITS, **guarded
        )

    def close_from(self, ip: str) -> int:
        return self._listener.close_from(ip)

    async def start(self, server_host: str) -> int:
        self.port = await self._listener.start()
        self.url = self.url or crl_url_for(server_host, self.port)
        record_crl_url(self.ca_dir, self.url)
        log.info("crl listening", address=self.host, port=self.port, url=self.url)
        return self.port

    async def stop(self) -> None:
        await self._listener.stop()
