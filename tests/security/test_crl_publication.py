"""A stranger against the CA's publication point (plain HTTP, no authentication).

It must publish exactly two public documents and nothing else of the CA's
directory (not its key, not its index), answer anything else with a short
refusal, and the URL certificates carry must be a plain ``http://`` URL that
cannot smuggle anything into every certificate issued.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from conclave.pki import create_ca
from conclave.pki.ca import CA_KEY_FILE, check_crl_url, set_crl_urls
from conclave.pki.errors import PkiError
from conclave.web.publish import LIMITS, Publication, record_crl_url
from tests.ops.conftest import WAIT, run


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    return answer


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_only_the_two_documents_are_served(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", common_name="Publication Test CA")
    key = (tmp_path / "ca" / CA_KEY_FILE).read_bytes()

    async def scenario() -> None:
        publication = Publication(tmp_path / "ca", "127.0.0.1", 0)
        port = await publication.start("sip.example.test")
        try:
            for path in (
                "/pki/ca.key", "/pki/../ca.key", "/pki/%2e%2e/ca.key", "/pki/index.json",
                "/ca.key", "/", "/pki/", "/pki/ca.crl/", "/docs", "/openapi.json",
            ):  # fmt: skip
                answer = await exchange(port, get(path))
                assert answer.startswith(b"HTTP/1.1 404 "), (path, answer[:80])
                assert b"PRIVATE KEY" not in answer and key not in answer
            answer = await exchange(port, get("/pki/ca.crl", "POST"))
            assert answer.startswith(b"HTTP/1.1 405 ") and b"allow: GET, HEAD" in answer
            # A TLS ClientHello on the plain port is a malformed request, nothing more.
            hello = bytes.fromhex("16030100a5010000a10303") + bytes(200)
            assert (await exchange(port, hello)).startswith(b"HTTP/1.1 400 ")
            head = b"GET /pki/ca.crl HTTP/1.1\r\nHost: x\r\nX: " + b"a" * LIMITS.max_head
            assert (await exchange(port, head + b"\r\n\r\n")).startswith(b"HTTP/1.1 431 ")
            answer = await exchange(port, get("/pki/ca.crl"))
            assert answer.startswith(b"HTTP/1.1 200 ")
            crl = x509.load_der_x509_crl(answer.partition(b"\r\n\r\n")[2])
            assert crl.is_signature_valid(ca.certificate.public_key())
        finally:
            await publication.stop()

    run(scenario())


@pytest.mark.parametrize(
    "url",
    [
        "https://sip.example.test/pki/ca.crl",  # a CRL check must not need TLS
        "ldap://sip.example.test/cn=ca",
        "javascript:alert(1)",
        "http:///pki/ca.crl",
        "http://user:pw@sip.example.test/pki/ca.crl",
        "http://sip.example.test/pki/ca.crl?x=1",
        "http://sip.example.test/pki/ca.crl\r\nX-Injected: 1",
        "http://sip.example.test/pki/ca crl",
        "http://sip.example.test" + "/a" * 600,
        "sip.example.test/pki/ca.crl",
    ],
)
def test_a_crl_url_that_is_not_plain_http_is_refused(url: str) -> None:
    with pytest.raises(PkiError, match="not a CRL URL"):
        check_crl_url(url)


def test_only_the_ca_s_host_records_the_url_and_certificates_then_carry_it(
    tmp_path: Path,
) -> None:
    ca = create_ca(tmp_path / "ca", common_name="Publication Test CA")
    url = "http://sip.example.test/pki/ca.crl"
    copy = tmp_path / "member-ca"  # a pool member: the CA certificate, no key
    copy.mkdir()
    (copy / "ca.crt").write_bytes(ca.certificate_pem())
    assert record_crl_url(copy, url) is False
    assert not (copy / "index.json").exists()
    before = ca.issue_server(["sip.example.test"])
    with pytest.raises(x509.ExtensionNotFound):
        before.certificate.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS)
    assert record_crl_url(tmp_path / "ca", url) is True
    assert set_crl_urls(tmp_path / "ca", [url]) is False  # unchanged
    after = ca.issue_server(["sip.example.test"]).certificate
    points = after.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS)
    assert [n.value for p in points.value for n in p.full_name or []] == [url]
    assert not points.critical
