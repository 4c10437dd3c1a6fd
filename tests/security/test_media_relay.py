"""An attacker's session against the media relay credentials (SERVICE, [media_relay]).

Credentials are for the signed-in user only, at their own address; a stranger
gets a challenge, another user's address or identity is 403, and a request
body that is not a small, plain MRAS request is refused before it is parsed
further (no DOCTYPE, no entities, bounded size). With the feature off the
method is not offered at all.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conclave.services.relay import CONTENT_TYPE, NAMESPACE
from conclave.sip.message import Response
from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient, digest_header
from tests.e2e.test_im import signed_in

from .conftest import PASSWORDS


def body(identity: str = "sip:alice@localhost", extra: str = "") -> bytes:
    return (
        f'{extra}<request xmlns="{NAMESPACE}" requestID="1" version="1.0">'
        '<credentialsRequest credentialsRequestID="2">'
        f"<identity>{identity}</identity><duration>60</duration>"
        "</credentialsRequest></request>"
    ).encode()


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(config={"media_relay": {"enabled": True, "servers": ["relay.test:3478"]}})


def service(
    client: SipClient,
    payload: bytes,
    *,
    uri: str = "sip:alice@localhost",
    content_type: str = CONTENT_TYPE,
) -> Response:
    """SERVICE from alice, signed with her password."""
    headers = [f"Content-Type: {content_type}"]
    first = client.send("SERVICE", uri, from_user="alice", headers=headers, body=payload)
    assert first.status == 407, first
    auth = digest_header(first, user="alice", password=PASSWORDS["alice"], method="SERVICE",
                         uri=uri)  # fmt: skip
    return client.send("SERVICE", uri, from_user="alice", headers=[*headers, auth], body=payload)


def test_a_stranger_gets_a_challenge_not_credentials(server: ConclaveServer) -> None:
    stranger = SipClient("tls", server.ports["tls"], ca=str(server.ca))
    headers = [f"Content-Type: {CONTENT_TYPE}"]
    answer = stranger.send("SERVICE", "sip:alice@localhost", from_user="alice",
                           headers=headers, body=body())  # fmt: skip
    assert answer.status == 407 and b"password" not in answer.body
    wrong = digest_header(answer, user="alice", password="not-her-password-1",
                          method="SERVICE", uri="sip:alice@localhost")  # fmt: skip
    again = stranger.send("SERVICE", "sip:alice@localhost", from_user="alice",
                          headers=[*headers, wrong], body=body())  # fmt: skip
    assert again.status == 407 and b"password" not in again.body


def test_a_user_gets_credentials_only_for_themselves(server: ConclaveServer) -> None:
    alice = signed_in(server, "alice")
    assert service(alice, body()).status == 200
    assert service(alice, body(), uri="sip:bob@localhost").status == 403
    assert service(alice, body(identity="sip:bob@localhost")).status == 403
    assert service(alice, body(identity="not a uri")).status == 403


@pytest.mark.parametrize(
    ("payload", "content_type", "status"),
    [
        (body(extra='<!DOCTYPE r [<!ENTITY x "xxxxxxxx">]>'), CONTENT_TYPE, 400),
        (body(extra='<?xml version="1.0"?><!DOCTYPE r SYSTEM "file:///etc/passwd">'),
         CONTENT_TYPE, 400),
        (b"<request" + b" a='b'" * 1000 + b"/>", CONTENT_TYPE, 413),
        (b"<request><unclosed>", CONTENT_TYPE, 400),
        (b'<other xmlns="urn:x"/>', CONTENT_TYPE, 400),
        (body().replace(b'requestID="1"', b'requestID="&lt;script&gt;"'), CONTENT_TYPE, 400),
        (body(), "text/plain", 415),
    ],
    ids=["entities", "external-doctype", "oversized", "malformed", "not-mras", "bad-id",
         "content-type"],
)  # fmt: skip
def test_bad_requests_are_refused_with_a_reason(
    server: ConclaveServer, payload: bytes, content_type: str, status: int
) -> None:
    alice = signed_in(server, "alice")
    answer = service(alice, payload, content_type=content_type)
    assert answer.status == status, answer
    assert answer.reason and b"password" not in answer.body


def test_off_by_default(make_server: Callable[..., ConclaveServer]) -> None:
    plain = make_server()
    alice = signed_in(plain, "alice")
    answer = alice.send("SERVICE", "sip:alice@localhost", from_user="alice",
                        headers=[f"Content-Type: {CONTENT_TYPE}"], body=body())  # fmt: skip
    assert answer.status == 405
    assert "SERVICE" not in (answer.headers.get("Allow") or "")
