"""SUBSCRIBE/NOTIFY (RFC 6665, RFC 3856) against the presence service on a fake stack."""

from __future__ import annotations

import asyncio

import pytest

from conclave.services.presence.directory import Directory
from conclave.services.presence.settings import PresenceSettings
from conclave.sip.address import parse_name_addr
from conclave.sip.transaction import ServerTransaction
from conclave.sip.uri import parse_uri

from .test_service_harness import DOMAIN, HOST, Harness, aor, pidf, sub_state


def test_subscribe_answers_200_then_full_state_notify() -> None:
    h = Harness()
    h.publish("bob", pidf("bob", note="hi"))
    resp, dialog = h.subscribe("alice", aor("bob"), expires=600)
    assert resp.status == 200
    assert resp.headers.get("Expires") == "600"
    contact = parse_name_addr(resp.headers.get("Contact") or "").uri
    assert h.local.is_me(contact)
    assert str(contact) == f"sip:presence@{HOST}:5061;transport=tls"
    assert dialog.to_tag
    [notify] = h.notifies(dialog)
    assert notify.method == "NOTIFY"
    assert notify.uri == parse_uri("sip:alice@127.0.0.1:40001;transport=tls")
    assert notify.headers.get("Event") == "presence"
    assert notify.headers.get("Subscription-State") == "active;expires=600"
    assert notify.headers.get("Content-Type") == "application/pidf+xml"
    assert notify.headers.get("Call-ID") == dialog.call_id
    assert parse_name_addr(notify.headers.get("From") or "").tag == dialog.to_tag
    assert parse_name_addr(notify.headers.get("To") or "").tag == dialog.from_tag
    assert b"<basic>open</basic>" in notify.body


def test_notify_goes_to_the_subscribe_flow_with_rising_cseq() -> None:
    h = Harness()
    flow = h.flow(7)
    _, dialog = h.subscribe("alice", aor("bob"), flow=flow)
    h.publish("bob", pidf("bob"))
    h.publish("bob", pidf("bob", activity="busy"), etag="etag1")
    sent = [
        (req, f) for req, f, _ in h.stack.requests if req.headers.get("Call-ID") == dialog.call_id
    ]
    assert [f for _, f in sent] == [flow, flow, flow]
    assert [r.headers.get("CSeq") for r, _ in sent] == ["1 NOTIFY", "2 NOTIFY", "3 NOTIFY"]


@pytest.mark.parametrize("event", ["dialog", "message-summary", "reg"])
def test_other_event_packages_are_489(event: str) -> None:
    h = Harness()
    resp, _ = h.subscribe("alice", aor("bob"), event=event)
    assert resp.status == 489
    assert resp.headers.get("Allow-Events") == "presence, presence.winfo"


def test_unknown_or_disabled_user_is_404() -> None:
    h = Harness(users=("alice", "bob"))
    assert h.subscribe("alice", aor("nobody"))[0].status == 404
    assert h.subscribe("alice", aor("bob"))[0].status == 200


def test_expires_rules() -> None:
    h = Harness(settings=PresenceSettings(min_expires=60, default_expires=300, max_expires=900))
    brief, _ = h.subscribe("alice", aor("bob"), expires=10)
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "60"
    assert h.subscribe("alice", aor("bob"), expires=None)[0].headers.get("Expires") == "300"
    assert h.subscribe("alice", aor("bob"), expires=5000)[0].headers.get("Expires") == "900"


def test_fetch_with_expires_zero_gets_one_terminated_notify_with_state() -> None:
    h = Harness()
    h.publish("bob", pidf("bob"))
    resp, dialog = h.subscribe("alice", aor("bob"), expires=0)
    assert resp.status == 200 and resp.headers.get("Expires") == "0"
    [notify] = h.notifies(dialog)
    assert sub_state(notify) == ("terminated", "timeout")
    assert b"<basic>open</basic>" in notify.body
    assert h.service.state.subscription_count() == 0


def test_refresh_sends_full_state_and_extends() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"), expires=100)
    h.advance(90)
    resp = h.refresh(dialog, 100)
    assert resp.status == 200 and resp.headers.get("Expires") == "100"
    assert [sub_state(n) for n in h.notifies(dialog)] == [("active", None), ("active", None)]
    h.advance(90)  # past the first expiry, within the refreshed one
    assert h.service.state.subscription_count() == 1


def test_refresh_over_a_new_connection_moves_the_notifies() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"), flow=h.flow(1))
    h.refresh(dialog, 600, flow=h.flow(2))
    h.publish("bob", pidf("bob"))
    assert h.stack.requests[-1][1] == h.flow(2)


def test_unsubscribe_sends_final_notify() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"))
    resp = h.refresh(dialog, 0)
    assert resp.status == 200 and resp.headers.get("Expires") == "0"
    notifies = h.notifies(dialog)
    assert sub_state(notifies[-1]) == ("terminated", "timeout")
    assert h.service.state.subscription_count() == 0
    assert h.refresh(dialog, 600).status == 481


def test_expiry_terminates_with_reason_timeout() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"), expires=60)
    h.advance(59)
    assert len(h.notifies(dialog)) == 1
    h.advance(1)
    [final] = h.notifies(dialog)
    assert sub_state(final) == ("terminated", "timeout")
    assert h.service.state.subscription_count() == 0
    assert h.service.deadlines.next() is None


def test_refresh_of_unknown_subscription_is_481() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"))
    dialog.to_tag = "not-ours"
    assert h.refresh(dialog, 600).status == 481


def test_refresh_with_old_cseq_is_500() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"))
    dialog.cseq = 0
    assert h.refresh(dialog, 600).status == 500


def test_refresh_by_another_user_is_403() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"))
    dialog.watcher = "carol"
    dialog.from_tag = "ftalice"
    req = h.request(
        "SUBSCRIBE", f"sip:presence@{HOST}:5061", user="carol", from_tag="ftalice",
        headers=[("Event", "presence"), ("Expires", "600")], call_id=dialog.call_id,
        to_tag=dialog.to_tag, cseq=5,
    )  # fmt: skip
    assert h.send(req, user="carol").status == 403


def test_change_notifies_and_identical_change_does_not() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"))
    tag = h.publish("bob", pidf("bob")).headers.get("SIP-ETag")
    tag = h.publish("bob", pidf("bob"), etag=tag).headers.get("SIP-ETag")  # same state
    h.publish("bob", etag=tag)  # refresh
    assert len(h.notifies(dialog)) == 2


def test_changes_within_the_window_are_merged() -> None:
    h = Harness(settings=PresenceSettings(merge_window=0.2))
    _, dialog = h.subscribe("alice", aor("bob"))
    assert len(h.notifies(dialog)) == 1
    tag = h.publish("bob", pidf("bob")).headers.get("SIP-ETag")
    h.advance(0.1)
    tag = h.publish("bob", pidf("bob", activity="busy"), etag=tag).headers.get("SIP-ETag")
    h.publish("bob", pidf("bob", activity="away"), etag=tag)
    assert h.notifies(dialog) == []
    h.advance(0.1)
    [merged] = h.notifies(dialog)
    assert b"<rpid:away/>" in merged.body


def test_one_notify_in_flight_then_the_latest_state() -> None:
    h = Harness(auto_answer=False)
    _, dialog = h.subscribe("alice", aor("bob"))
    tag = h.publish("bob", pidf("bob")).headers.get("SIP-ETag")
    h.publish("bob", pidf("bob", activity="busy"), etag=tag)
    assert len(h.notifies(dialog)) == 1  # the initial one, unanswered
    req, _, txn = h.stack.requests[0]
    h.answer(req, txn, 200)
    h.settle()
    [latest] = h.notifies(dialog)
    assert b"<rpid:busy/>" in latest.body


@pytest.mark.parametrize("status", [481, 404, 500])
def test_failed_notify_removes_the_subscription(status: int) -> None:
    h = Harness(auto_answer=False)
    _, dialog = h.subscribe("alice", aor("bob"))
    req, _, txn = h.stack.requests[0]
    h.answer(req, txn, status)
    assert h.service.state.subscription_count() == 0
    h.publish("bob", pidf("bob"))
    assert len(h.notifies(dialog)) == 1


def test_notify_timeout_or_dead_connection_removes_the_subscription() -> None:
    h = Harness(auto_answer=False)
    h.subscribe("alice", aor("bob"))
    _, _, txn = h.stack.requests[0]
    h.fail(txn, 408)
    assert h.service.state.subscription_count() == 0
    h.stack.refuse = True
    h.subscribe("carol", aor("bob"))
    assert h.service.state.subscription_count() == 0


def test_contact_is_required() -> None:
    h = Harness()
    req = h.request("SUBSCRIBE", aor("bob"), user="alice", headers=[("Event", "presence")])
    req.headers.remove("Contact")
    assert h.send(req, user="alice").status == 400


def test_accept_without_pidf_is_406() -> None:
    h = Harness()
    resp, _ = h.subscribe("alice", aor("bob"), headers=[("Accept", "application/xpidf+xml")])
    assert resp.status == 406
    ok, _ = h.subscribe("alice", aor("bob"), headers=[("Accept", "application/pidf+xml")])
    assert ok.status == 200


def test_unknown_require_is_420() -> None:
    h = Harness()
    resp, _ = h.subscribe("alice", aor("bob"), headers=[("Require", "frobnicate")])
    assert resp.status == 420
    assert resp.headers.get("Unsupported") == "frobnicate"


def test_requests_wait_for_the_first_load() -> None:
    h = Harness()
    loads: list[int] = []

    async def load() -> Directory:
        loads.append(1)
        return Directory(DOMAIN)

    h.service._load = load
    h.service.loaded = False
    req = h.request("SUBSCRIBE", aor("bob"), user="alice", headers=[("Event", "presence")])
    txn = ServerTransaction(req, h.flow(), reliable=True)
    h.service.handle(txn, req, user="alice", flow=h.flow())
    assert h.stack.responses == []
    asyncio.run(h.service.reload())
    assert [r.status for r in h.stack.responses] == [200]
    assert loads == [1]
