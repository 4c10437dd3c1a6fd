"""An attacker's session against in-dialog routing and unsolicited responses.

Issue 12, items 1-3. Alice calls Bob through a default deployment (with plain
TCP and UDP also open, as an administrator might). Mallory has sniffed the
call: its Route (with our dialog id), its Call-ID and its tags. She has no
credentials of her own, or she has Carol's.

Where an attack must have no effect on a victim, the victim is probed
afterwards with a legitimate message through the same server: the first thing
the victim receives must be the probe, so nothing from the attack came first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from conclave.sip.address import parse_name_addr
from conclave.sip.message import Request, Response
from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient, digest_header
from tests.e2e.test_calls import answer, in_dialog, invite
from tests.e2e.test_im import send_im, signed_in
from tests.e2e.test_security import register

from .conftest import PASSWORDS


@dataclass
class Call:
    alice: SipClient
    bob: SipClient
    ok: Response
    invite: Request  # as Bob received it
    call_id: str

    @property
    def from_hdr(self) -> str:
        return self.ok.headers.get("From") or ""

    @property
    def to_hdr(self) -> str:
        return self.ok.headers.get("To") or ""

    @property
    def target(self) -> str:
        return str(parse_name_addr(self.ok.headers.get("Contact") or "").uri)

    def request_from_alice(self, client: SipClient, method: str, cseq: int, **kw: str) -> bytes:
        return in_dialog(
            client,
            method,
            self.ok,
            self.target,
            from_hdr=kw.get("from_hdr", self.from_hdr),
            to_hdr=kw.get("to_hdr", self.to_hdr),
            call_id=self.call_id,
            cseq=cseq,
        )


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(transports="tls,tcp,udp")


def established_call(server: ConclaveServer) -> Call:
    alice, bob = signed_in(server, "alice"), signed_in(server, "bob")
    call_id = "call-" + os.urandom(4).hex()
    invite(alice, call_id)
    incoming = bob.recv_request()
    answer(bob, incoming, 200, "bobtag")
    ok = alice.final()
    assert ok.status == 200
    call = Call(alice, bob, ok, incoming, call_id)
    alice.send_raw(call.request_from_alice(alice, "ACK", 2))
    assert bob.recv_request().method == "ACK"
    return call


def expect_next(client: SipClient, method: str) -> Request:
    """The next request ``client`` receives is ``method`` (the probe), answered 200.

    Answered so that nothing is left open: a graceful stop waits for a
    proxied request that has no final response yet.
    """
    got = client.recv_request()
    assert got.method == method, f"expected the probe {method}, got {got.method}"
    client.reply(got, 200)
    return got


def with_body(raw: bytes, body: bytes) -> bytes:
    head = raw.split(b"\r\n\r\n", 1)[0].replace(b"Content-Length: 0", b"Content-Type: text/plain")
    return head + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def test_a_sniffed_route_is_not_a_credential(server: ConclaveServer) -> None:
    call = established_call(server)
    mallory = SipClient("tcp", server.ports["tcp"], host="127.0.0.2")
    # Unauthenticated, as Alice, on a connection the dialog does not know: 407.
    spoof = with_body(call.request_from_alice(mallory, "MESSAGE", 5), b"wire the money")
    mallory.send_raw(spoof)
    assert mallory.final().status == 407
    bye = call.request_from_alice(mallory, "BYE", 6)
    mallory.send_raw(bye)
    assert mallory.final().status == 407
    # A made-up sender on the dialog's own route: refused outright.
    helpdesk = '"IT helpdesk" <sip:helpdesk@localhost>;tag=' + (
        parse_name_addr(call.from_hdr).tag or ""
    )
    forged = with_body(call.request_from_alice(mallory, "MESSAGE", 7, from_hdr=helpdesk), b"pw?")
    mallory.send_raw(forged)
    assert mallory.final().status == 403
    # Bob received none of it: the next thing he gets is Alice's own INFO.
    call.alice.send_raw(call.request_from_alice(call.alice, "INFO", 8))
    expect_next(call.bob, "INFO")


def test_credentials_of_someone_outside_the_dialog_do_not_help(server: ConclaveServer) -> None:
    call = established_call(server)
    carol = SipClient("tcp", server.ports["tcp"])
    raw = call.request_from_alice(carol, "BYE", 5)
    carol.send_raw(raw)
    challenge = carol.final()
    assert challenge.status == 407
    auth = digest_header(
        challenge, user="carol", password=PASSWORDS["carol"], method="BYE", uri=call.target
    )
    authed = raw.replace(b"Content-Length: 0", auth.encode() + b"\r\nContent-Length: 0")
    carol.send_raw(authed)
    refused = carol.final()
    assert refused.status == 403 and "party" in refused.reason
    call.alice.send_raw(call.request_from_alice(call.alice, "INFO", 9))
    expect_next(call.bob, "INFO")


def test_a_party_that_reconnected_proves_who_it_is(server: ConclaveServer) -> None:
    call = established_call(server)
    moved = SipClient("tls", server.ports["tls"], ca=str(server.ca))
    raw = call.request_from_alice(moved, "INFO", 5)
    moved.send_raw(raw)
    challenge = moved.final()
    assert challenge.status == 407
    auth = digest_header(
        challenge, user="alice", password=PASSWORDS["alice"], method="INFO", uri=call.target
    )
    moved.send_raw(raw.replace(b"Content-Length: 0", auth.encode() + b"\r\nContent-Length: 0"))
    expect_next(call.bob, "INFO")
    assert moved.final().status == 200


def test_a_dead_flow_is_430_and_never_a_registered_contact(server: ConclaveServer) -> None:
    call = established_call(server)
    carol = signed_in(server, "carol")
    call.bob.close()
    server.wait_for(lambda e: e.get("event") == "flow closed; bindings removed")
    # Bob comes back on a new connection; the dialog still names the old one.
    bob_again = signed_in(server, "bob")
    to_carol = with_body(
        call.request_from_alice(call.alice, "MESSAGE", 5, to_hdr=call.to_hdr), b"hello"
    )
    call.alice.send_raw(to_carol)
    assert call.alice.final().status == 430
    helpdesk = '"IT helpdesk" <sip:helpdesk@localhost>;tag=' + (
        parse_name_addr(call.from_hdr).tag or ""
    )
    forged = with_body(
        call.request_from_alice(call.alice, "MESSAGE", 6, from_hdr=helpdesk), b"password?"
    )
    call.alice.send_raw(forged)
    assert call.alice.final().status == 403
    # Neither Bob's new connection nor Carol got anything before the probes.
    send_im(call.alice, "alice", "carol", b"probe")
    expect_next(carol, "MESSAGE")
    assert call.alice.final().status == 200
    send_im(call.alice, "alice", "bob", b"probe")
    expect_next(bob_again, "MESSAGE")


def test_the_dialog_ends_with_bye(server: ConclaveServer) -> None:
    call = established_call(server)
    call.alice.send_raw(call.request_from_alice(call.alice, "BYE", 5))
    expect_next(call.bob, "BYE")
    assert call.alice.final().status == 200
    # The route is dead now, even for a party on its own flow.
    call.alice.send_raw(call.request_from_alice(call.alice, "INFO", 6))
    assert call.alice.final().status == 481


def forged_response(status: int, via_to: str, server_via: str, method: str = "INVITE") -> bytes:
    lines = [
        f"SIP/2.0 {status} Forged",
        f"Via: {server_via}",
        f"Via: {via_to}",
        "From: <sip:alice@localhost>;tag=a",
        "To: <sip:bob@localhost>;tag=b",
        f"Call-ID: forged-{os.urandom(4).hex()}",
        f"CSeq: 1 {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_unsolicited_responses_go_nowhere(server: ConclaveServer) -> None:
    call = established_call(server)
    carol = SipClient("udp", server.ports["udp"])  # a victim on UDP
    status, _ = register(carol, "carol", PASSWORDS["carol"])
    assert status == 200
    # A Via exactly like the ones this server writes (its host and port).
    ours = (call.invite.headers.get("Via") or "").split(";")[0]
    mallory = SipClient("udp", server.ports["udp"], host="127.0.0.2")
    forged = 0
    for status in (180, 200, 486):
        server_via = f"{ours};branch=z9hG4bK{os.urandom(11).hex()}"
        to_udp = f"SIP/2.0/UDP 127.0.0.1:{carol.local_port};branch=z9hG4bKv;rport"
        to_tls = f"SIP/2.0/TLS 127.0.0.1:{call.alice.local_port};branch=z9hG4bKw"
        mallory.send_raw(forged_response(status, to_udp, server_via))
        mallory.send_raw(forged_response(status, to_tls, server_via))
        forged += 2
    server.wait_for(
        lambda e: (
            e.get("event") == "stray response dropped"
            and len(server.events("stray response dropped")) >= forged
        )
    )
    # The victims' next messages are the probes, not a forged response.
    send_im(call.bob, "bob", "alice", b"probe")
    expect_next(call.alice, "MESSAGE")
    assert call.bob.final().status == 200
    send_im(call.bob, "bob", "carol", b"probe")
    expect_next(carol, "MESSAGE")


def test_a_cancel_from_another_connection_is_not_the_callers(server: ConclaveServer) -> None:
    """Every device an INVITE is forked to sees its Via branch; a CANCEL
    cannot be challenged, so only the caller's own flow may carry one."""
    alice, bob = signed_in(server, "alice"), signed_in(server, "bob")
    request = invite(alice, "call-" + os.urandom(4).hex())
    incoming = bob.recv_request()
    answer(bob, incoming, 180, "bobtag")
    head = request.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    keep = [h for h in head[1:] if h.split(":")[0] in ("Via", "From", "To", "Call-ID")]
    cseq = next(h for h in head if h.startswith("CSeq:")).split()[1]
    cancel = "\r\n".join(
        ["CANCEL sip:bob@localhost SIP/2.0", *keep, "Max-Forwards: 70", f"CSeq: {cseq} CANCEL"]
    )
    mallory = SipClient("tcp", server.ports["tcp"], host="127.0.0.2")
    mallory.send_raw((cancel + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert mallory.final().status == 481
    # Bob is still ringing: the next thing he gets is Alice's own CANCEL.
    alice.send_raw((cancel + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert expect_next(bob, "CANCEL").method == "CANCEL"
    answer(bob, incoming, 487, "bobtag")  # the INVITE ends as a cancelled one does
