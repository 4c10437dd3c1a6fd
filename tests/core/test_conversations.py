"""Scripted conversations with the real core on an in-memory network (issue 13).

Each test is a script in the spirit of Prosody's scansion files: a device sends
this, the server answers that, another device receives this. The server is the
production assembly (stack, router, sign-in, proxy, dialogs and every default
feature, on SQLite); the network and the SIP clock are :mod:`tests.core.network`.
Time moves only when a script advances it, so Timers B, C and F take no time.

Every script ends with ``core.quiet()`` (every transaction timer runs out) and
checks that the core holds nothing for finished work: no request still being
proxied, no transaction, no background task, no timer.

This file: registration, instant messages, and what the request path refuses.
Forking, failing branches and timeouts are in ``test_conversations_forking``;
dialogs and stray responses in ``test_conversations_dialogs``.
"""

from __future__ import annotations

from conclave.sip.message import Request
from conclave.store import OfflineMessageStore

from .conftest import Converse
from .network import (
    DOMAIN,
    NOTHING_LEFT,
    Core,
    established_call,
    is_server_via,
)


# -- registration and sign-in (RFC 3261 §10, §22) ------------------------------------------------
def test_registration(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice = core.agent("alice")

        # Alice registers without credentials and is challenged, SHA-256 first (RFC 8760).
        alice.send(alice.register())
        challenge = alice.expect_response(401)
        offered = challenge.headers.get_all("WWW-Authenticate")
        assert [o.split("algorithm=")[1].split(",")[0] for o in offered] == ["SHA-256", "MD5"]
        assert core.bindings(alice.aor) == []

        # She registers again with credentials: 200 lists her one binding.
        alice.retry_with_credentials(challenge)
        ok = alice.expect_response(200)
        (contact,) = ok.headers.get_all("Contact")
        assert contact.startswith(alice.contact) and ";expires=3600" in contact
        (binding,) = core.bindings(alice.aor)
        assert binding.flow == alice.flow  # RFC 5626: she is reached on this connection

        # A second device of hers registers: both are bound, and a query lists both.
        laptop = core.agent("alice")
        laptop.sign_in()
        alice.send_signed(alice.register(contact=False))
        listed = alice.expect_response(200).headers.get_all("Contact")
        assert sorted(c.split(";expires")[0] for c in listed) == sorted(
            [alice.contact, laptop.contact]
        )
        assert {b.flow for b in core.bindings(alice.aor)} == {alice.flow, laptop.flow}

        # The laptop unregisters (Expires: 0); the phone stays.
        laptop.send_signed(laptop.register(expires=0))
        laptop.expect_response(200)
        assert [b.flow for b in core.bindings(alice.aor)] == [alice.flow]

        # Alice may not register Bob's address (§10.3 step 4).
        forged = alice.register()
        forged.headers.set("To", f"<sip:bob@{DOMAIN}>")
        alice.send_signed(forged)
        alice.expect_response(403)
        assert core.bindings(f"sip:bob@{DOMAIN}") == []

        # A wrong password is challenged again, like an unknown user.
        mallory = core.agent("bob")
        mallory.password = "guess"
        mallory.send(mallory.register())
        mallory.retry_with_credentials(mallory.expect_response(401))
        mallory.expect_response(401)
        assert core.bindings(f"sip:bob@{DOMAIN}") == []

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_password_guessing_bans_the_source_not_the_user(converse: Converse) -> None:
    async def script(core: Core) -> None:
        bob = core.agent("bob")
        bob.sign_in()  # his phone: a familiar address from now on
        mallory = core.agent("bob")
        mallory.password = "guess"
        mallory.send(mallory.register())
        # Each wrong answer is challenged again; the failure after the tenth in a
        # minute ([limits] auth_failures_per_minute) bans the source.
        for _ in range(core.guard.auth_failures_per_minute + 1):
            mallory.retry_with_credentials(mallory.expect_response(401))
        mallory.expect_response(401)
        mark = core.network.mark()
        mallory.send(mallory.register())
        assert core.network.since(mark) == []  # banned: dropped, not answered

        # Bob himself, from his own address, is not locked out, though the guesses
        # locked strangers out of his account (docs/security.md, account lockout).
        bob.sign_in()
        stranger = core.agent("bob")
        stranger.send(stranger.register())
        stranger.retry_with_credentials(stranger.expect_response(401))  # the right password
        stranger.expect_response(401)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


# -- instant messages (RFC 3428) -----------------------------------------------------------------
def test_message_to_an_online_user(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()

        # Alice sends Bob a message, claiming to be someone else; she is challenged (407).
        hello = alice.message("bob", "Hello Bob")
        hello.headers.add("P-Asserted-Identity", f"<sip:boss@{DOMAIN}>")
        alice.send(hello)
        alice.retry_with_credentials(alice.expect_response(407))

        # Bob's device receives it from the server, asserted as Alice (RFC 3325).
        received = bob.expect_request("MESSAGE")
        assert received.body == b"Hello Bob"
        assert received.headers.get_all("P-Asserted-Identity") == [f"<{alice.aor}>"]
        assert received.headers.get("Proxy-Authorization") is None  # §22.3: consumed here
        assert received.headers.get("Max-Forwards") == "69"
        assert is_server_via(received.headers.get_all("Via")[0])

        # Bob accepts it; Alice gets the 200, without the server's Via.
        bob.answer(received, 200)
        ok = alice.expect_response(200)
        assert not any(is_server_via(v) for v in ok.headers.get_all("Via"))
        alice.expect_nothing()
        bob.expect_nothing()

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_a_device_registered_through_a_path_is_reached_through_it(converse: Converse) -> None:
    # RFC 3327: an edge proxy on the way of the REGISTER adds Path; requests for
    # the device go back through it, as Route headers in the Path's order.
    path = ("<sip:tok1@edge1.example.test;lr>", "<sip:edge2.example.test;lr>")

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        register = alice.request(
            "REGISTER", f"sip:{DOMAIN}", to=alice.aor,
            headers=(("Expires", "3600"), *(("Path", hop) for hop in path)),
        )  # fmt: skip
        alice.send(register)
        alice.retry_with_credentials(alice.expect_response(401))
        alice.expect_response(200)
        bob.sign_in()

        bob.send(bob.message("alice", "through the edge"))
        bob.retry_with_credentials(bob.expect_response(407))
        received = alice.expect_request("MESSAGE")
        assert received.headers.get_all("Route") == list(path)
        assert is_server_via(received.headers.get_all("Via")[0])
        alice.answer(received, 200)
        bob.expect_response(200)

        # Bob registered directly: what reaches him carries no Route.
        alice.send_signed(alice.message("bob", "direct"))
        direct = bob.expect_request("MESSAGE")
        assert direct.headers.get_all("Route") == []
        bob.answer(direct, 200)
        alice.expect_response(200)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_message_to_an_unknown_user_and_to_another_domain(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice = core.agent("alice")
        alice.sign_in()
        alice.send_signed(alice.message("nobody", "hello?"))
        alice.expect_response(404)
        alice.send_signed(alice.request("MESSAGE", "sip:bob@elsewhere.test", body=b"hi"))
        alice.expect_response(403)  # no relaying: federation is off

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_message_to_an_offline_user_is_stored_then_delivered(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        store = OfflineMessageStore(core.db)

        # Bob has no device: the message is stored and Alice gets 202 (RFC 3428 §7).
        sent = alice.send_signed(alice.message("bob", "Call me when you are back"))
        await core.settle()  # the store's write
        alice.expect_response(202)
        assert await store.count_for(f"sip:bob@{DOMAIN}") == 1

        # Bob registers: the held message comes to his device from the server,
        # with its original From and a Date.
        bob.sign_in()
        held = await bob.next_request("MESSAGE")
        assert held.body == b"Call me when you are back"
        assert held.headers.get("From") == sent.headers.get("From")
        assert held.headers.get("Date")
        assert held.headers.get("To") == f"<sip:bob@{DOMAIN}>"

        # His device refuses it for now: it is put back, not lost.
        bob.answer(held, 486)
        await core.settle()
        assert await store.count_for(f"sip:bob@{DOMAIN}") == 1

        # His next registration brings it again; this time he takes it.
        bob.send_signed(bob.register())
        bob.expect_response(200)
        again = await bob.next_request("MESSAGE")
        assert again.body == b"Call me when you are back"
        bob.answer(again, 200)
        await core.settle()
        assert await store.count_for(f"sip:bob@{DOMAIN}") == 0
        alice.expect_nothing()

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_a_forked_message_has_one_final_response(converse: Converse) -> None:
    """§16.7 step 5 forwards every 2xx to an INVITE only: a MESSAGE that both
    devices accept gets one 200, not two."""

    async def script(core: Core) -> None:
        alice, phone, desk = core.agent("alice"), core.agent("bob"), core.agent("bob")
        for device in (alice, phone, desk):
            device.sign_in()
        alice.send_signed(alice.message("bob", "hello both"))
        on_phone, on_desk = phone.expect_request("MESSAGE"), desk.expect_request("MESSAGE")
        phone.answer(on_phone, 200)
        desk.answer(on_desk, 200)
        alice.expect_response(200)
        alice.expect_nothing()

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


# -- what the request path refuses ---------------------------------------------------------------
def test_loops_and_exhausted_hops(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()

        no_hops = alice.message("bob", "hi")
        no_hops.headers.set("Max-Forwards", "0")
        alice.send_signed(no_hops)
        alice.expect_response(483)  # §16.3 step 3

        # The request comes back as the server forwarded it, to the same
        # Request-URI: a loop (§16.3 step 4)...
        sent = alice.send_signed(alice.message("bob", "round and round"))
        forwarded = bob.expect_request("MESSAGE")
        looped = Request("MESSAGE", sent.uri, forwarded.headers.copy(), forwarded.body)
        bob.send(looped)
        bob.expect_response(482)
        # ...while to a new Request-URI (the device's contact) it is a spiral:
        # not refused as a loop (here: not our domain, no relaying).
        bob.send(forwarded)
        bob.expect_response(403)
        bob.answer(forwarded, 200)
        alice.expect_response(200)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_graceful_stop_refuses_new_work_but_not_calls(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        _, _, dialog = established_call(alice, bob)

        core.stack.draining = True  # what a graceful stop does first
        alice.send_signed(alice.message("bob", "one more thing"))
        refused = alice.expect_response(503)
        assert refused.headers.get("Retry-After")
        alice.send(alice.in_dialog(dialog, "BYE"))  # the call can still end
        bob.answer(bob.expect_request("BYE"), 200)
        alice.expect_response(200)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_input_that_does_not_parse(converse: Converse) -> None:
    """A stream frame that does not parse is answered 400 when enough of it is
    readable; a datagram that does not parse is dropped (ARCHITECTURE.md)."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob", transport="udp")
        good = alice.message("bob", "hi").serialise()
        broken = good.replace(b"Max-Forwards: 70", b"Max-Forwards: lots", 1)
        alice.send_raw(broken)
        assert alice.expect_response(400).reason
        mark = core.network.mark()
        bob.send_raw(b"\x00\x01 not SIP at all\r\n\r\n")
        assert core.network.since(mark) == []
        assert core.stack.counters["malformed"] == 2

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_a_failure_on_the_request_path_is_answered_500_and_leaves_nothing(
    converse: Converse,
) -> None:
    """A bug while forwarding (here: the server has no port of its own for the
    callee's transport, so it cannot write its Via) must not leave the sender
    waiting or the proxy holding the request."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob", transport="udp")
        alice.sign_in()
        bob.sign_in()
        del core.local.ports["udp"]  # what forwarding to bob needs
        alice.send(alice.message("bob", "Hello Bob"))
        alice.retry_with_credentials(alice.expect_response(407))
        assert alice.expect_response(500).reason == "Server Internal Error"
        bob.expect_nothing()
        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)
