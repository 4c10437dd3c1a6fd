"""Scripted conversations with the real core on an in-memory network (issue 13).

Each test is a script in the spirit of Prosody's scansion files: a device sends
this, the server answers that, another device receives this. The server is the
production assembly (stack, router, sign-in, proxy, dialogs and every default
feature, on SQLite); the network and the SIP clock are :mod:`tests.core.network`.
Time moves only when a script advances it, so Timers B, F and C take no time.

Every script ends with ``core.quiet()`` (let every transaction timer run out)
and checks that the core holds nothing for finished work: no request still
being proxied, no transaction, no background task, no timer.
"""

from __future__ import annotations

import pytest

from conclave.core.proxy import TIMER_C
from conclave.ops.metrics import REGISTRY
from conclave.sip.message import Request, Response
from conclave.store import OfflineMessageStore

from .conftest import Converse
from .network import DOMAIN, SERVER_IP, Core, UserAgent

NOTHING_LEFT = {
    "proxied requests": 0,
    "transactions": 0,
    "background tasks": 0,
    "timers": 0,
}
TIMER_B = TIMER_F = 32.0
"""64*T1 with the default T1 of 500 ms (RFC 3261 §17.1.1.2, §17.1.2.2)."""


def is_server_via(value: str) -> bool:
    return f" {SERVER_IP}:" in value


def stray_dropped() -> float:
    return REGISTRY.get_sample_value("conclave_stray_responses_dropped_total") or 0.0


# -- registration (RFC 3261 §10, §22) --------------------------------------------------------
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


# -- instant messages (RFC 3428) -------------------------------------------------------------
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


# -- forking and CANCEL (RFC 3261 §16.6, §16.7, §16.10, §9.1) ---------------------------------
def call_both(core: Core) -> tuple[UserAgent, UserAgent, UserAgent, Request]:
    """Alice, Bob's two devices (signed in), and Alice's signed INVITE to Bob."""
    alice, phone, desk = core.agent("alice"), core.agent("bob"), core.agent("bob")
    for device in (alice, phone, desk):
        device.sign_in()
    invite = alice.send_signed(alice.invite("bob"))
    return alice, phone, desk, invite


def test_forked_invite_cancelled_by_the_caller(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, phone, desk, invite = call_both(core)

        # Both of Bob's devices ring; Alice hears both (provisional responses are relayed).
        on_phone, on_desk = phone.expect_request("INVITE"), desk.expect_request("INVITE")
        assert on_phone.headers.get("Call-ID") == on_desk.headers.get("Call-ID")
        assert len(on_phone.headers.get_all("Record-Route")) == 2  # RFC 5658 double
        phone.answer(on_phone, 180)
        desk.answer(on_desk, 180)
        alice.expect_response(180)
        alice.expect_response(180)

        # Alice hangs up before anyone answers: the server takes her CANCEL (200)...
        alice.send(alice.cancel(invite))
        alice.expect_response(200)

        # ...and cancels both branches (§16.10).
        for device, ringing in ((phone, on_phone), (desk, on_desk)):
            cancel = device.expect_request("CANCEL")
            assert cancel.headers.get_all("Via")[0] == ringing.headers.get_all("Via")[0]
            device.answer(cancel, 200)
            device.answer(ringing, 487)
            device.expect_request("ACK")  # the server ACKs the 487 hop by hop

        # Alice gets one 487 and ACKs it.
        terminated = alice.expect_response(487)
        alice.send(alice.ack(invite, terminated))
        alice.expect_nothing()

        core.quiet()
        assert core.leaks() == NOTHING_LEFT
        assert len(core.dialogs) == 0  # the two branches' early dialogs closed

    converse(script)


def test_cancel_waits_for_a_provisional_response(converse: Converse) -> None:
    """§9.1: a CANCEL may not be sent before the branch has seen a provisional response."""

    async def script(core: Core) -> None:
        alice, phone, desk, invite = call_both(core)
        on_phone, on_desk = phone.expect_request("INVITE"), desk.expect_request("INVITE")

        alice.send(alice.cancel(invite))
        alice.expect_response(200)
        phone.expect_nothing()  # neither branch has rung: no CANCEL yet
        desk.expect_nothing()

        # The phone rings: its CANCEL goes out at once.
        phone.answer(on_phone, 180)
        phone.answer(phone.expect_request("CANCEL"), 200)
        phone.answer(on_phone, 487)
        phone.expect_request("ACK")

        # The desk set rings too, later: cancelled as well.
        desk.answer(on_desk, 183)
        desk.answer(desk.expect_request("CANCEL"), 200)
        desk.answer(on_desk, 487)
        desk.expect_request("ACK")

        # Provisional responses still reach Alice until the final one (§16.7 step 5).
        alice.expect_response(180)
        alice.expect_response(183)
        alice.send(alice.ack(invite, alice.expect_response(487)))

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


# -- a branch whose send fails at once; a connection that closed ------------------------------
def test_only_branch_fails_at_once(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        core.network.fail(bob.flow)  # the write to Bob's connection fails

        mark = core.network.mark()
        alice.send_signed(alice.message("bob", "anyone there?"))
        # The branch answers 503 itself (§16.8); passed on as 500 (§16.7 step 6).
        alice.expect_response(500)
        assert [p.fate for p in core.network.since(mark) if p.flow == bob.flow] == ["refused"]
        assert core.proxy.pending() == 0

        alice.send_signed(alice.invite("bob"))
        alice.expect_response(500)
        assert len(core.dialogs) == 0  # the branch's dialog attempt closed with it

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_one_failing_branch_does_not_stop_the_other(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, phone, desk = core.agent("alice"), core.agent("bob"), core.agent("bob")
        for device in (alice, phone, desk):
            device.sign_in()
        core.network.fail(phone.flow)

        alice.send_signed(alice.message("bob", "hello"))
        assert core.proxy.pending() == 1  # waiting on the desk
        desk.answer(desk.expect_request("MESSAGE"), 200)
        alice.expect_response(200)  # the best response: the desk's 200

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_closed_connection_makes_the_user_offline(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()

        core.network.close(bob.flow)  # the transport reports the connection closed
        assert core.bindings(bob.aor) == []

        mark = core.network.mark()
        alice.send_signed(alice.message("bob", "still there?"))
        await core.settle()
        alice.expect_response(202)  # stored for when he is back
        assert not [p for p in core.network.since(mark) if p.flow == bob.flow]

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


# -- timeouts (RFC 3261 §16.7, §16.8, Timers B, C, E, F) ---------------------------------------
def test_message_to_a_device_that_never_answers(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()

        alice.send_signed(alice.message("bob", "hello?"))
        bob.expect_request("MESSAGE")  # delivered; Bob's device stays silent

        core.advance(TIMER_F - 0.1)
        alice.expect_nothing()
        core.advance(0.1)  # Timer F: the branch times out (408, §16.8)
        alice.expect_response(408)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_lost_datagrams_are_retransmitted_until_timer_f(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob", transport="udp")
        alice.sign_in()
        bob.sign_in()
        core.network.drop(bob.flow)  # every datagram to Bob is lost

        mark = core.network.mark()
        alice.send_signed(alice.message("bob", "hello?"))
        core.advance(TIMER_F)
        # Timer E: 0, 0.5, 1.5, 3.5, 7.5, then every T2 = 4 s until Timer F at 32 s.
        tries = [p for p in core.network.since(mark) if p.flow == bob.flow]
        assert len(tries) == 11 and {p.fate for p in tries} == {"dropped"}
        alice.expect_response(408)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_silent_branch_and_unavailable_branch(converse: Converse) -> None:
    """§16.7 step 6: among 408 (Timer B) and 480, the caller gets 480."""

    async def script(core: Core) -> None:
        alice, phone, desk, invite = call_both(core)
        phone.expect_request("INVITE")  # silent
        desk.answer(desk.expect_request("INVITE"), 480)
        desk.expect_request("ACK")

        core.advance(TIMER_B - 0.1)
        alice.expect_nothing()  # still waiting for the phone
        core.advance(0.1)
        unavailable = alice.expect_response(480)
        alice.send(alice.ack(invite, unavailable))

        core.quiet()
        assert core.leaks() == NOTHING_LEFT
        assert len(core.dialogs) == 0

    converse(script)


def test_busy_server_becomes_500(converse: Converse) -> None:
    """§16.7 step 6: a 503 chosen as the best response is sent on as 500."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        invite = alice.send_signed(alice.invite("bob"))
        bob.answer(bob.expect_request("INVITE"), 503)
        bob.expect_request("ACK")
        failed = alice.expect_response(500)
        alice.send(alice.ack(invite, failed))

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_timer_c_cancels_a_branch_that_rings_too_long(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        invite = alice.send_signed(alice.invite("bob"))
        ringing = bob.expect_request("INVITE")
        bob.answer(ringing, 180)
        alice.expect_response(180)

        core.advance(TIMER_C - 1)
        bob.expect_nothing()
        core.advance(1)  # Timer C (§16.8): the proxy cancels the branch
        bob.answer(bob.expect_request("CANCEL"), 200)
        bob.answer(ringing, 487)
        bob.expect_request("ACK")
        alice.send(alice.ack(invite, alice.expect_response(487)))

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


# -- in-dialog requests (RFC 3261 §12, §16.12; docs/security.md) ------------------------------
def test_call_in_dialog_and_strangers(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, phone, desk, invite = call_both(core)
        carol = core.agent("carol")
        carol.sign_in()
        on_phone, on_desk = phone.expect_request("INVITE"), desk.expect_request("INVITE")
        desk.answer(on_desk, 180)
        alice.expect_response(180)

        # The phone answers: Alice gets the 200, the desk's branch is cancelled (§16.7 step 10).
        phone.answer(on_phone, 200)
        answered = alice.expect_response(200)
        desk.answer(desk.expect_request("CANCEL"), 200)
        desk.answer(on_desk, 487)
        desk.expect_request("ACK")
        alice.expect_nothing()  # the 487 of a cancelled fork is not relayed after a 200

        # Alice ACKs along the recorded route; only the phone gets it.
        dialog = alice.dialog_as_caller(invite, answered)
        assert len(dialog.route_set) == 2
        alice.send(alice.in_dialog(dialog, "ACK"))
        ack = phone.expect_request("ACK")
        assert ack.headers.get("Route") is None  # our own Route entries were removed
        desk.expect_nothing()

        # Carol, on her own connection, replays a BYE of Alice's dialog: she must
        # prove she is Alice (407); she can only prove she is Carol (403).
        forged = alice.in_dialog(dialog, "BYE")
        carol.send(forged)
        carol.retry_with_credentials(carol.expect_response(407))
        carol.expect_response(403)
        # An ACK cannot be challenged: from her connection it is dropped.
        mark = core.network.mark()
        carol.send(alice.in_dialog(dialog, "ACK"))
        assert core.network.since(mark) == []
        # A Route token that names no dialog: 481.
        bogus = alice.in_dialog(dialog, "INFO")
        token = dialog.route_set[0].split("sip:")[1].split("@")[0]
        bogus.headers.remove("Route")
        for route in dialog.route_set:
            bogus.headers.add("Route", route.replace(token, "A" * len(token)))
        alice.send(bogus)
        alice.expect_response(481)
        phone.expect_nothing()

        # Bob hangs up from the phone: the BYE goes to Alice's connection only.
        bye = phone.in_dialog(phone.dialog_as_callee(on_phone), "BYE")
        phone.send(bye)
        alice.answer(alice.expect_request("BYE"), 200)
        phone.expect_response(200)
        assert len(core.dialogs) == 0  # a BYE ends the dialog

        # After the BYE, the dialog is gone: 481.
        alice.send(alice.in_dialog(dialog, "BYE"))
        alice.expect_response(481)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_in_dialog_request_toward_a_closed_connection(converse: Converse) -> None:
    """RFC 5626 §5.3: the other party's flow is gone: 430, never a guessed new one."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        invite = alice.send_signed(alice.invite("bob"))
        ringing = bob.expect_request("INVITE")
        bob.answer(ringing, 200)
        dialog = alice.dialog_as_caller(invite, alice.expect_response(200))
        alice.send(alice.in_dialog(dialog, "ACK"))
        bob.expect_request("ACK")

        core.network.close(bob.flow)
        alice.send(alice.in_dialog(dialog, "INFO"))
        alice.expect_response(430)

        # Bob comes back on a new connection and hangs up: not on his recorded
        # flow, so he must prove he is Bob; then the BYE goes to Alice, and
        # requests to him go to his new connection.
        back = core.agent("bob")
        back.send(bob.in_dialog(bob.dialog_as_callee(ringing), "BYE"))
        back.retry_with_credentials(back.expect_response(407))
        alice.answer(alice.expect_request("BYE"), 200)
        back.expect_response(200)
        assert len(core.dialogs) == 0

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


# -- responses that match nothing (RFC 3261 §16.7, docs/security.md) --------------------------
def test_responses_that_match_nothing_are_dropped(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob, carol = core.agent("alice"), core.agent("bob"), core.agent("carol")
        for device in (alice, bob, carol):
            device.sign_in()
        before = stray_dropped()
        mark = core.network.mark()

        # A 200 whose Via names a third party: never sent where its Via points.
        stray = bob.request("MESSAGE", alice.aor)
        stray.headers.replace_first("Via", "SIP/2.0/TLS 203.0.113.9:5061;branch=z9hG4bKnothing")
        bob.send(Response(200, "OK", stray.headers.copy()))

        # A 2xx to an INVITE with our Via and a branch naming no dialog of ours.
        invite = bob.request("INVITE", alice.aor)
        invite.headers.prepend(
            "Via", f"SIP/2.0/TLS {SERVER_IP}:5061;branch=z9hG4bK{'B' * 22}0011223344556677.x;rport"
        )
        invite.headers.set("To", f"<{alice.aor}>;tag=made-up")
        bob.send(Response(200, "OK", invite.headers.copy()))

        assert core.network.since(mark) == []
        assert stray_dropped() == before + 2

        # A response with the branch of a live transaction, on someone else's
        # connection (§18.1.2): stray; the real answer still goes through.
        alice.send_signed(alice.message("bob", "hello"))
        delivered = bob.expect_request("MESSAGE")
        answer_of_bob = Response(200, "OK", delivered.headers.copy())
        answer_of_bob.headers.set("To", f"{delivered.headers.get('To')};tag=carol")
        carol.send(answer_of_bob)
        alice.expect_nothing()
        assert stray_dropped() == before + 3
        bob.answer(delivered, 200)
        alice.expect_response(200)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_a_ringing_device_that_ignores_cancel(converse: Converse) -> None:
    """§9.1: with no final response 64*T1 after a CANCEL, the branch is over.

    The phone rings, takes the CANCEL (200) and never sends its 487 (a crashed
    or buggy device). The caller must still get a final answer, and nothing
    may stay behind."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        invite = alice.send_signed(alice.invite("bob"))
        ringing = bob.expect_request("INVITE")
        bob.answer(ringing, 180)
        alice.expect_response(180)

        alice.send(alice.cancel(invite))
        alice.expect_response(200)
        bob.answer(bob.expect_request("CANCEL"), 200)  # ...and no 487, ever

        core.advance(TIMER_F - 0.1)
        alice.expect_nothing()
        core.advance(0.1)  # 64*T1 after the CANCEL: the branch answers 408 itself
        alice.send(alice.ack(invite, alice.expect_response(408)))
        assert len(core.dialogs) == 0

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_a_ringing_device_whose_connection_closes(converse: Converse) -> None:
    """The phone rings, then its connection closes: Timer C's CANCEL cannot be
    sent. The caller must still get a final answer, and nothing may stay behind."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        invite = alice.send_signed(alice.invite("bob"))
        bob.answer(bob.expect_request("INVITE"), 180)
        alice.expect_response(180)
        core.network.close(bob.flow)

        core.advance(TIMER_C)  # Timer C: the CANCEL cannot be sent
        alice.expect_nothing()
        core.advance(TIMER_F)  # 64*T1 later the branch is given up
        alice.send(alice.ack(invite, alice.expect_response(408)))

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_two_devices_answer_at_once(converse: Converse) -> None:
    """§16.7 step 5: every 2xx is forwarded, even after another one (RFC 6026)."""

    async def script(core: Core) -> None:
        alice, phone, desk, invite = call_both(core)
        on_phone, on_desk = phone.expect_request("INVITE"), desk.expect_request("INVITE")
        phone.answer(on_phone, 200)
        desk.answer(on_desk, 200)  # before the proxy's CANCEL could reach it
        first, second = alice.expect_response(200), alice.expect_response(200)
        desk.expect_nothing()  # a branch that answered is not cancelled

        # Alice ACKs both and hangs up on the second (§13.2.2.4).
        with_phone = alice.dialog_as_caller(invite, first)
        with_desk = alice.dialog_as_caller(invite, second)
        alice.send(alice.in_dialog(with_phone, "ACK"))
        alice.send(alice.in_dialog(with_desk, "ACK"))
        phone.expect_request("ACK")
        desk.expect_request("ACK")
        alice.send(alice.in_dialog(with_desk, "BYE"))
        desk.answer(desk.expect_request("BYE"), 200)
        alice.expect_response(200)
        phone.expect_nothing()

        # The phone's 2xx comes again after its transaction ended (its UAS
        # retransmits until it sees the ACK, §13.3.1.4): forwarded along the dialog.
        core.quiet()
        before = stray_dropped()
        phone.send(on_phone_answer := phone.sent[-1])
        assert isinstance(on_phone_answer, Response) and on_phone_answer.status == 200
        assert alice.expect_response(200).headers.get("Call-ID") == invite.call_id
        assert stray_dropped() == before

        core.quiet()
        assert core.leaks() == NOTHING_LEFT
        assert len(core.dialogs) == 1  # the call with the phone goes on

    converse(script)


def test_timer_c_starts_again_with_each_provisional_response(converse: Converse) -> None:
    """§16.7 step 2: a provisional response other than 100 resets Timer C, so a
    device that keeps reporting progress is not cancelled 3 minutes after its first."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        invite = alice.send_signed(alice.invite("bob"))
        ringing = bob.expect_request("INVITE")
        bob.answer(ringing, 180)
        core.advance(120)
        bob.answer(ringing, 183)  # still in progress: Timer C runs from here
        core.advance(TIMER_C - 1)
        bob.expect_nothing()
        core.advance(1)
        bob.answer(bob.expect_request("CANCEL"), 200)
        bob.answer(ringing, 487)
        bob.expect_request("ACK")
        alice.expect_response(180)
        alice.expect_response(183)
        alice.send(alice.ack(invite, alice.expect_response(487)))

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_a_decline_ends_every_branch(converse: Converse) -> None:
    """§16.7 steps 6 and 10: a 6xx cancels the other branches and is the answer."""

    async def script(core: Core) -> None:
        alice, phone, desk, invite = call_both(core)
        on_phone, on_desk = phone.expect_request("INVITE"), desk.expect_request("INVITE")
        desk.answer(on_desk, 180)
        alice.expect_response(180)
        phone.answer(on_phone, 603)
        phone.expect_request("ACK")
        desk.answer(desk.expect_request("CANCEL"), 200)
        desk.answer(on_desk, 487)
        desk.expect_request("ACK")
        alice.send(alice.ack(invite, alice.expect_response(603)))

        core.quiet()
        assert core.leaks() == NOTHING_LEFT
        assert len(core.dialogs) == 0

    converse(script)


def test_a_losing_fork_that_ignores_cancel(converse: Converse) -> None:
    """The phone answers; the desk, cancelled, never sends its 487. The caller's
    transaction ends (Timer L) when the desk's §9.1 wait does: nothing may stay."""

    async def script(core: Core) -> None:
        alice, phone, desk, invite = call_both(core)
        on_phone, on_desk = phone.expect_request("INVITE"), desk.expect_request("INVITE")
        desk.answer(on_desk, 180)
        phone.answer(on_phone, 200)
        desk.answer(desk.expect_request("CANCEL"), 200)  # ...and no 487, ever
        alice.expect_response(180)
        dialog = alice.dialog_as_caller(invite, alice.expect_response(200))
        alice.send(alice.in_dialog(dialog, "ACK"))
        phone.expect_request("ACK")

        core.quiet()
        alice.expect_nothing()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_the_caller_goes_away_while_it_rings(converse: Converse) -> None:
    """Alice's connection closes while Bob's phone rings: relaying Bob's next
    provisional response fails and her transaction ends. The phone must not
    ring on for a caller who is gone: its branch is cancelled."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        alice.send_signed(alice.invite("bob"))
        ringing = bob.expect_request("INVITE")
        bob.answer(ringing, 180)
        core.network.close(alice.flow)
        bob.answer(ringing, 183)  # cannot be relayed: Alice's transaction fails

        bob.answer(bob.expect_request("CANCEL"), 200)
        bob.answer(ringing, 487)
        bob.expect_request("ACK")

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


@pytest.mark.xfail(
    strict=True,
    reason="router.on_cancel (conclave/core/router.py) takes a CANCEL from any flow: "
    "a CANCEL cannot be challenged (§22.1), so its flow is the only proof of its sender",
)
def test_a_cancel_from_another_connection_does_not_end_the_call(converse: Converse) -> None:
    """Bob's phone sees Alice's Via branch in the INVITE it is sent; whoever
    learns it may not cancel her call from another connection."""

    async def script(core: Core) -> None:
        alice, phone, desk, invite = call_both(core)
        mallory = core.agent("carol")  # connected, not even signed in
        on_phone, on_desk = phone.expect_request("INVITE"), desk.expect_request("INVITE")
        phone.answer(on_phone, 180)
        desk.answer(on_desk, 180)

        mallory.send(alice.cancel(invite))
        refused = mallory.receive()
        assert isinstance(refused, Response) and refused.status >= 400
        phone.expect_nothing()
        desk.expect_nothing()

    converse(script)


def test_an_invite_is_challenged_then_busy(converse: Converse) -> None:
    """The 407 and the 486 are each ACKed hop by hop (§17.1.1.3); both
    transactions end with their ACK."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        bob.sign_in()
        invite = alice.invite("bob")
        alice.send(invite)
        challenged = alice.expect_response(407)
        alice.send(alice.ack(invite, challenged))
        signed = alice.retry_with_credentials(challenged)
        bob.answer(bob.expect_request("INVITE"), 486)
        bob.expect_request("ACK")
        alice.send(alice.ack(signed, alice.expect_response(486)))
        assert core.layer.server_count == 0  # both INVITE transactions ended on their ACK

        core.quiet()
        assert core.leaks() == NOTHING_LEFT

    converse(script)


def test_re_invite_within_the_call(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        invite = alice.send_signed(alice.invite("bob"))
        ringing = bob.expect_request("INVITE")
        bob.answer(ringing, 200)
        dialog = alice.dialog_as_caller(invite, alice.expect_response(200))
        alice.send(alice.in_dialog(dialog, "ACK"))
        bob.expect_request("ACK")

        # Bob puts Alice on hold: a re-INVITE along the dialog, answered and ACKed.
        bobs = bob.dialog_as_callee(ringing)
        reinvite = bob.in_dialog(bobs, "INVITE")
        bob.send(reinvite)
        held = alice.expect_request("INVITE")
        assert held.headers.get("Route") is None
        alice.answer(held, 200)
        bob.expect_response(200)
        bob.send(bob.in_dialog(bobs, "ACK", cseq=bobs.cseq))
        alice.expect_request("ACK")
        assert len(core.dialogs) == 1

        alice.send(alice.in_dialog(dialog, "BYE"))
        bob.answer(bob.expect_request("BYE"), 200)
        alice.expect_response(200)

        core.quiet()
        assert core.leaks() == NOTHING_LEFT
        assert len(core.dialogs) == 0

    converse(script)


def test_graceful_stop_refuses_new_work_but_not_calls(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        invite = alice.send_signed(alice.invite("bob"))
        bob.answer(bob.expect_request("INVITE"), 200)
        dialog = alice.dialog_as_caller(invite, alice.expect_response(200))
        alice.send(alice.in_dialog(dialog, "ACK"))
        bob.expect_request("ACK")

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


def test_password_guessing_bans_the_source_not_the_user(converse: Converse) -> None:
    async def script(core: Core) -> None:
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

        # Bob himself, from his own address, is not locked out.
        bob = core.agent("bob")
        bob.sign_in()

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
