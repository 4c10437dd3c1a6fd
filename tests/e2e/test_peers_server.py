"""Issue 3 with real peers: sipp, sipsak and baresip against a real Conclave server.

sipp reads only the first challenge of a 401/407, so these deployments
offer MD5 first (both algorithms are still offered). sipsak and baresip
announce themselves in User-Agent and are offered MD5 alone by the default
compatibility list (see ``[auth] md5_only_user_agents``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import PASSWORDS
from .peers import (
    Baresip,
    SippUAS,
    run_sipsak,
    sipp_bad_register,
    sipp_call,
    sipp_cancel,
    sipp_message,
    sipp_register,
)
from .server import ConclaveServer

pytestmark = pytest.mark.peers

SIPP_AUTH = {"auth": {"algorithms": ["MD5", "SHA-256"]}}
DOMAIN = "localhost"


@pytest.fixture
def sipp_server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(transports="tls,tcp,udp", config=SIPP_AUTH)


@pytest.mark.parametrize("transport", ["u1", "t1", "l1"])
def test_sipp_register_with_digest(sipp_server: ConclaveServer, transport: str) -> None:
    listener = {"u1": "udp", "t1": "tcp", "l1": "tls"}[transport]
    result = sipp_register(
        sipp_server.target(listener), "alice", PASSWORDS["alice"], domain=DOMAIN,
        transport=transport, tls_ca=str(sipp_server.ca),
    )  # fmt: skip
    result.check()
    assert result.received_codes()[:2] == [401, 200]


def test_sipp_register_wrong_password_refused(sipp_server: ConclaveServer) -> None:
    sipp_bad_register(sipp_server.target("udp"), "alice", "wrong-password-x", domain=DOMAIN).check()


def test_sipp_message_between_registered_users(sipp_server: ConclaveServer) -> None:
    target = sipp_server.target("udp")
    bob = SippUAS("uas_message", service="bob")
    bob.register(target, password=PASSWORDS["bob"], domain=DOMAIN).check()
    with bob:
        result = sipp_message(target, "alice", PASSWORDS["alice"], "bob", "hi bob", domain=DOMAIN)
        result.check()
        assert 407 in result.received_codes() and 200 in result.received_codes()
        bob.wait(timeout=30).check()


def test_sipp_call_through_the_proxy(sipp_server: ConclaveServer) -> None:
    target = sipp_server.target("udp")
    bob = SippUAS("uas_answer", service="bob")
    bob.register(target, password=PASSWORDS["bob"], domain=DOMAIN).check()
    with bob:
        result = sipp_call(target, "alice", PASSWORDS["alice"], "bob", domain=DOMAIN)
        result.check()
        codes = result.received_codes()
        assert 407 in codes and 180 in codes and codes.count(200) >= 2  # INVITE and BYE
        bob.wait(timeout=30).check()


def test_sipp_cancel_of_a_ringing_call(sipp_server: ConclaveServer) -> None:
    target = sipp_server.target("udp")
    bob = SippUAS("uas_ring_noanswer", service="bob")
    bob.register(target, password=PASSWORDS["bob"], domain=DOMAIN).check()
    with bob:
        result = sipp_cancel(target, "alice", PASSWORDS["alice"], "bob", domain=DOMAIN)
        result.check()
        assert 487 in result.received_codes()
        bob.wait(timeout=30).check()


def test_sipsak_options_and_registration(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(transports="tls,udp")
    port = server.ports["udp"]
    ping = run_sipsak(["-s", f"sip:127.0.0.1:{port}", "-vv"])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "200 OK" in ping.stdout
    reg = run_sipsak(
        ["-U", "-s", f"sip:alice@{DOMAIN}:{port}", "-a", PASSWORDS["alice"], "-u", "alice",
         "-E", "udp", "-x", "600", "-vv"]
    )  # fmt: skip
    assert reg.returncode == 0, reg.stdout + reg.stderr
    server.wait_for(lambda e: e.get("event") == "register" and e.get("status") == 200)


def test_baresip_sign_in_message_and_call_over_tls(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server()  # defaults: TLS only, SHA-256 first for everyone else
    outbound = f"sip:127.0.0.1:{server.ports['tls']};transport=tls"
    with (
        Baresip(f"sip:alice@{DOMAIN}", password=PASSWORDS["alice"], outbound=outbound,
                ca_file=str(server.ca), contacts=[f"sip:bob@{DOMAIN}"]) as alice,
        Baresip(f"sip:bob@{DOMAIN}", password=PASSWORDS["bob"], outbound=outbound,
                ca_file=str(server.ca), contacts=[f"sip:alice@{DOMAIN}"]) as bob,
    ):  # fmt: skip
        alice.wait_registered(timeout=20)
        bob.wait_registered(timeout=20)
        alice.send_message(f"sip:bob@{DOMAIN}", "hello from alice")
        assert "hello from alice" in bob.wait_message(timeout=20)
        alice.dial(f"sip:bob@{DOMAIN}")
        bob.wait_call_incoming(timeout=20)
        bob.accept()
        alice.wait_call_established(timeout=20)
        bob.wait_call_established(timeout=20)
        alice.hangup()
        bob.wait_call_closed(timeout=20)
        alice.wait_call_closed(timeout=20)
