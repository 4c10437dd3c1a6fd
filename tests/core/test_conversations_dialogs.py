"""Conversations: requests inside a dialog, strangers, and responses that match nothing.

What an in-dialog request must prove (ARCHITECTURE.md, docs/security.md): it
comes on its party's recorded flow or authenticates as that party, and goes only
to the other party's recorded flow. A response that matches no transaction is
forwarded only along a dialog this server recorded, else dropped and counted.
"""

from __future__ import annotations

from conclave.sip.message import Response

from .conftest import Converse
from .network import (
    NOTHING_LEFT,
    SERVER_IP,
    Core,
    call_both,
    established_call,
    stray_dropped,
)


# -- in-dialog requests (RFC 3261 §12, §16.12; docs/security.md) ---------------------------------
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
        _, ringing, dialog = established_call(alice, bob)

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


def test_in_dialog_request_toward_a_closed_connection(converse: Converse) -> None:
    """RFC 5626 §5.3: the other party's flow is gone: 430, never a guessed new one."""

    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        _, ringing, dialog = established_call(alice, bob)

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


# -- responses that match nothing (RFC 3261 §16.7, docs/security.md) -----------------------------
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
