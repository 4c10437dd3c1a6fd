"""The dialog table: what an in-dialog request must prove (conclave.core.dialogs)."""

from __future__ import annotations

from conclave.core.dialogs import (
    EARLY_LIFETIME,
    IDLE_LIFETIME,
    DialogTable,
    Hop,
    Refusal,
    RoutedDialog,
    Side,
)
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.message import Request, Response
from conclave.sip.uri import parse_uri

ALICE = Flow("tls", ("127.0.0.1", 40000), ("127.0.0.1", 5061), 1)
BOB = Flow("tls", ("127.0.0.1", 40001), ("127.0.0.1", 5061), 2)
MALLORY = Flow("tcp", ("127.0.0.2", 40002), ("127.0.0.1", 5060), 3)
A = "sip:alice@example.test"
B = "sip:bob@example.test"


def request(
    method: str,
    *,
    from_aor: str = A,
    from_tag: str | None = "a1",
    to_aor: str = B,
    to_tag: str | None = None,
    call_id: str = "call-1",
) -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/TLS 127.0.0.1:40000;branch=z9hG4bKx")
    h.add("From", f"<{from_aor}>" + (f";tag={from_tag}" if from_tag else ""))
    h.add("To", f"<{to_aor}>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", call_id)
    h.add("CSeq", f"1 {method}")
    return Request(method, parse_uri(to_aor), h)


def response(status: int, to_tag: str | None, call_id: str = "call-1") -> Response:
    h = Headers()
    h.add("From", f"<{A}>;tag=a1")
    h.add("To", f"<{B}>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", call_id)
    h.add("CSeq", "1 INVITE")
    return Response(status, "x", h)


def established(table: DialogTable, now: float = 0.0) -> RoutedDialog:
    dialog = table.open(request("INVITE"), owner=A, caller_flow=ALICE, callee_flow=BOB, now=now)
    assert dialog is not None
    table.on_response(dialog, response(180, "b1"), now)
    table.on_response(dialog, response(200, "b1"), now)
    assert dialog.established
    return dialog


def test_the_parties_on_their_flows_reach_each_other() -> None:
    table = DialogTable()
    dialog = established(table)
    bye = request("BYE", to_tag="b1")
    hop = table.check(dialog.id, bye, ALICE, 1.0)
    assert isinstance(hop, Hop)
    assert hop.on_party_flow and hop.side is Side.CALLER and hop.toward == BOB
    back = request("BYE", from_aor=B, from_tag="b1", to_aor=A, to_tag="a1")
    hop = table.check(dialog.id, back, BOB, 1.0)
    assert isinstance(hop, Hop)
    assert hop.on_party_flow and hop.side is Side.CALLEE and hop.toward == ALICE


def test_a_sniffed_token_from_another_flow_must_authenticate() -> None:
    table = DialogTable()
    dialog = established(table)
    hop = table.check(dialog.id, request("MESSAGE", to_tag="b1"), MALLORY, 1.0)
    assert isinstance(hop, Hop) and not hop.on_party_flow
    assert hop.sender.aor == A  # the router must authenticate the sender as alice


def test_forged_from_or_to_is_refused() -> None:
    table = DialogTable()
    dialog = established(table)
    helpdesk = request("MESSAGE", from_aor="sip:helpdesk@example.test", to_tag="b1")
    assert table.check(dialog.id, helpdesk, ALICE, 1.0) == Refusal(
        403, "From and To do not match the dialog"
    )
    carol = request("MESSAGE", to_aor="sip:carol@example.test", to_tag="b1")
    assert isinstance(table.check(dialog.id, carol, ALICE, 1.0), Refusal)


def test_the_token_is_bound_to_its_call_id_and_tags() -> None:
    table = DialogTable()
    dialog = established(table)
    other_call = request("BYE", to_tag="b1", call_id="call-2")
    assert table.check(dialog.id, other_call, ALICE, 1.0).status == 403  # type: ignore[union-attr]
    unknown_tag = request("BYE", to_tag="b9")
    assert table.check(dialog.id, unknown_tag, ALICE, 1.0).status == 481  # type: ignore[union-attr]
    wrong_from_tag = request("BYE", from_tag="zz", to_tag="b1")
    assert isinstance(table.check(dialog.id, wrong_from_tag, ALICE, 1.0), Refusal)


def test_unknown_and_made_up_tokens_are_481() -> None:
    table = DialogTable()
    established(table)
    refusal = table.check("AAAAAAAAAAAAAAAAAAAAAA", request("BYE", to_tag="b1"), ALICE, 1.0)
    assert refusal == Refusal(481, "Call/Transaction Does Not Exist")


def test_bye_ends_the_dialog_and_the_token_dies_with_it() -> None:
    table = DialogTable()
    dialog = established(table)
    bye = request("BYE", to_tag="b1")
    hop = table.check(dialog.id, bye, ALICE, 1.0)
    assert isinstance(hop, Hop)
    table.end(hop, bye)
    assert len(table) == 0
    assert isinstance(table.check(dialog.id, request("MESSAGE", to_tag="b1"), ALICE, 2.0), Refusal)


def test_dialogs_expire_when_idle_and_requests_keep_them_alive() -> None:
    table = DialogTable()
    dialog = established(table)
    hop = table.check(dialog.id, request("INFO", to_tag="b1"), ALICE, IDLE_LIFETIME - 1)
    assert isinstance(hop, Hop)
    table.touch(dialog, IDLE_LIFETIME - 1)
    assert isinstance(
        table.check(dialog.id, request("INFO", to_tag="b1"), ALICE, IDLE_LIFETIME + 1), Hop
    )
    late = 2 * IDLE_LIFETIME
    assert isinstance(table.check(dialog.id, request("INFO", to_tag="b1"), ALICE, late), Refusal)
    table.sweep(late)
    assert len(table) == 0


def test_an_unanswered_attempt_expires_and_a_failed_one_closes() -> None:
    table = DialogTable()
    ringing = table.open(request("INVITE"), owner=A, caller_flow=ALICE, callee_flow=BOB, now=0.0)
    assert ringing is not None
    table.sweep(EARLY_LIFETIME + 1)
    assert len(table) == 0
    refused = table.open(request("INVITE"), owner=A, caller_flow=ALICE, callee_flow=BOB, now=0.0)
    assert refused is not None
    table.on_response(refused, response(486, "b1"), 1.0)
    assert len(table) == 0


def test_a_party_that_authenticated_elsewhere_is_reached_there() -> None:
    table = DialogTable()
    dialog = established(table)
    hop = table.check(dialog.id, request("INFO", to_tag="b1"), MALLORY, 1.0)
    assert isinstance(hop, Hop)
    table.moved(hop, MALLORY)  # the router authenticated it as alice first
    back = request("INFO", from_aor=B, from_tag="b1", to_aor=A, to_tag="a1")
    hop = table.check(dialog.id, back, BOB, 2.0)
    assert isinstance(hop, Hop) and hop.toward == MALLORY


def test_memory_is_bounded_globally_and_per_user() -> None:
    table = DialogTable(max_dialogs=3, max_per_user=2)
    for n in range(2):
        invite = request("INVITE", call_id=f"c{n}")
        assert table.open(invite, owner=A, caller_flow=ALICE, callee_flow=BOB, now=0.0)
    assert not table.can_open(A)
    assert table.can_open(B)
    for n in range(3):
        invite = request("INVITE", from_aor=B, call_id=f"d{n}")
        table.open(invite, owner=f"u{n}", caller_flow=BOB, callee_flow=ALICE, now=0.0)
    assert len(table) == 3
    assert table.evicted == 2


def test_a_stray_2xx_goes_only_to_the_recorded_caller() -> None:
    table = DialogTable()
    dialog = table.open(request("INVITE"), owner=A, caller_flow=ALICE, callee_flow=BOB, now=0.0)
    assert dialog is not None
    late_fork = response(200, "b2")
    assert table.for_stray_2xx(dialog.id, late_fork, BOB, 1.0) == ALICE
    assert "b2" in dialog.callee_tags
    # From anywhere else, or naming another dialog: nowhere.
    assert table.for_stray_2xx(dialog.id, late_fork, MALLORY, 1.0) is None
    assert table.for_stray_2xx("x" * 22, late_fork, BOB, 1.0) is None
    assert table.for_stray_2xx(dialog.id, response(200, "b2", call_id="other"), BOB, 1.0) is None


def test_a_notify_before_the_2xx_is_accepted_only_from_the_callee_flow() -> None:
    table = DialogTable()
    subscribe = request("SUBSCRIBE")
    dialog = table.open(subscribe, owner=A, caller_flow=ALICE, callee_flow=BOB, now=0.0)
    assert dialog is not None
    notify = request("NOTIFY", from_aor=B, from_tag="n1", to_aor=A, to_tag="a1")
    assert isinstance(table.check(dialog.id, notify, MALLORY, 1.0), Refusal)
    hop = table.check(dialog.id, notify, BOB, 1.0)
    assert isinstance(hop, Hop) and hop.toward == ALICE
