"""Conversations: forking, CANCEL, branches that fail, and timeouts (RFC 3261 §16).

The real core on the in-memory network (:mod:`tests.core.network`); time moves
only when a script advances it. Every script ends with no leftovers.
"""

from __future__ import annotations

from conclave.core.proxy import TIMER_C
from conclave.sip.message import Response

from .conftest import Converse
from .network import (
    NOTHING_LEFT,
    TIMER_B,
    TIMER_F,
    Core,
    call_both,
    stray_dropped,
)


# -- forking and CANCEL (RFC 3261 §16.6, §16.7, §16.10, §9.1) ------------------------------------
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


# -- a branch whose send fails at once; a connection that closed ---------------------------------
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


# -- timeouts (RFC 3261 §16.7, §16.8, §9.1; Timers B, C, E, F) -----------------------------------
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
