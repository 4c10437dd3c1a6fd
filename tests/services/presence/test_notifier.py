"""The NOTIFY fan-out's shortcuts: per-dialog templates and cached privacy levels.

Each shortcut must leave the wire unchanged: the NOTIFYs are checked field
by field against what the dialog says they must be (RFC 6665 §4.3, RFC 3261
§12.2.1.1), including after a refresh that moves the dialog to another
Contact and transport.
"""

from __future__ import annotations

import pytest

from conclave.services.presence.directory import Directory
from conclave.services.presence.model import Availability, DeviceState
from conclave.services.presence.notifier import PUMP_SLICE
from conclave.services.presence.state import Publication, Subscription
from conclave.sip.flow import Flow
from conclave.sip.message import Request
from conclave.sip.uri import parse_uri

from .test_service_harness import DOMAIN, HOST, Dialog, Harness, aor, pidf

ROUTES = ("<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>")


def _subscription(h: Harness, dialog: Dialog) -> Subscription:
    [sub] = [s for s in h.service.state.all_subscriptions() if s.key[0] == dialog.call_id]
    return sub


def _dialog_fields(notify: Request) -> list[tuple[str, str]]:
    """The NOTIFY's header fields with the per-NOTIFY branch and CSeq number blanked."""
    fields = []
    for name, value in notify.headers:
        if name == "Via":
            value = value.split(";branch=", 1)[0]
        elif name == "CSeq":
            value = value.split(" ", 1)[1]
        fields.append((name, value))
    return fields


def _refresh_from(h: Harness, dialog: Dialog, contact: str, flow: Flow) -> None:
    """A refresh that brings a new Contact, over ``flow``."""
    dialog.cseq += 1
    req = h.request(
        "SUBSCRIBE",
        f"sip:presence@{HOST}:5061;transport=tls",
        user=dialog.watcher,
        headers=[("Event", dialog.event), ("Expires", "600"), ("Supported", "eventlist")],
        call_id=dialog.call_id,
        to_tag=dialog.to_tag,
        cseq=dialog.cseq,
        contact=contact,
    )
    req.headers.set("To", f"<{dialog.uri}>;tag={dialog.to_tag}")
    assert h.send(req, user=dialog.watcher, flow=flow).status == 200


def test_list_notifies_carry_the_dialog_and_follow_a_refresh() -> None:
    h = Harness(directory=Directory.build(DOMAIN, {aor("alice"): [(aor("bob"), None)]}, {}))
    _, dialog = h.subscribe(
        "alice",
        f"sip:alice+contacts@{DOMAIN}",
        headers=[("Supported", "eventlist"), *(("Record-Route", r) for r in ROUTES)],
    )
    h.publish("bob", pidf("bob"))
    first, second = h.notifies(dialog)
    sub = _subscription(h, dialog)
    dialog_part = [
        ("Max-Forwards", "70"),
        *(("Route", r) for r in ROUTES),
        ("From", f"<sip:alice+contacts@{DOMAIN}>;tag={dialog.to_tag}"),
        ("To", f"<sip:alice@{DOMAIN}>;tag={dialog.from_tag}"),
        ("Call-ID", dialog.call_id),
    ]

    def expected(notify: Request, transport: str, port: int) -> list[tuple[str, str]]:
        content_type = notify.headers.get("Content-Type") or ""
        assert content_type.startswith('multipart/related;type="application/rlmi+xml";')
        return [
            ("Via", f"SIP/2.0/{transport.upper()} {HOST}:{port}"),
            *dialog_part,
            ("CSeq", "NOTIFY"),
            ("Contact", f"<sip:presence@{HOST}:{port};transport={transport}>"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=600"),
            ("Require", "eventlist"),
            ("Content-Type", content_type),
        ]

    for notify in (first, second):
        assert _dialog_fields(notify) == expected(notify, "tls", 5061)
        assert notify.uri == parse_uri("sip:alice@127.0.0.1:40001;transport=tls")
        # Built from the subscription's copy of its target, never the target itself.
        assert notify.uri is not sub.target
    assert [n.headers.get("CSeq") for n in (first, second)] == ["1 NOTIFY", "2 NOTIFY"]
    assert first.headers.get("Via") != second.headers.get("Via")  # a fresh branch each

    # A refresh from another Contact over UDP: the next NOTIFYs follow it.
    udp = Flow("udp", ("127.0.0.1", 41000), ("127.0.0.1", 5060))
    _refresh_from(h, dialog, "<sip:alice@127.0.0.1:41000>", udp)
    h.publish("bob", pidf("bob", activity="busy"), etag="etag1")
    refreshed, changed = h.notifies(dialog)
    for notify in (refreshed, changed):
        assert _dialog_fields(notify) == expected(notify, "udp", 5060)
        assert notify.uri == parse_uri("sip:alice@127.0.0.1:41000")
    assert h.stack.requests[-1][1] == udp
    assert [n.headers.get("CSeq") for n in (refreshed, changed)] == ["3 NOTIFY", "4 NOTIFY"]


def test_final_notify_without_a_body_has_no_content_type() -> None:
    h = Harness()
    _, dialog = h.subscribe("alice", aor("bob"))
    h.users.discard("bob")
    h.service.users_changed({"alice", "carol", "dave"}, set())
    h.settle()
    _, final = h.notifies(dialog)
    assert final.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert "Content-Type" not in final.headers and final.body == b""
    assert [name for name, _ in final.headers] == [
        "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "Event",
        "Subscription-State",
    ]  # fmt: skip
    assert final.serialise().endswith(b"Subscription-State: terminated;reason=noresource\r\n"
                                      b"Content-Length: 0\r\n\r\n")  # fmt: skip


@pytest.fixture
def relationship_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every ``Directory.relationship(owner, watcher)`` asked during the test."""
    calls: list[tuple[str, str]] = []
    real = Directory.relationship

    def counting(self: Directory, owner: str, watcher: str) -> object:
        calls.append((owner, watcher))
        return real(self, owner, watcher)

    monkeypatch.setattr(Directory, "relationship", counting)
    return calls


def test_levels_are_computed_once_per_snapshot(relationship_calls: list[tuple[str, str]]) -> None:
    h = Harness()
    _, alice = h.subscribe("alice", aor("bob"))
    _, carol = h.subscribe("carol", aor("bob"))
    etag = None
    for activity in ("busy", "meeting", "away"):
        response = h.publish("bob", pidf("bob", activity=activity), etag=etag)
        etag = response.headers.get("SIP-ETag")
    assert len(h.notifies(alice)) == len(h.notifies(carol)) == 4
    assert sorted(relationship_calls) == [(aor("bob"), aor("alice")), (aor("bob"), aor("carol"))]

    # A new snapshot (carol blocked) is consulted afresh, and takes effect:
    # bob's rules changed, so both of his watchers are checked again.
    relationship_calls.clear()
    h.apply(Directory.build(DOMAIN, {}, {aor("bob"): {aor("carol"): "blocked"}}))
    assert sorted(relationship_calls) == [(aor("bob"), aor("alice")), (aor("bob"), aor("carol"))]
    [blocked] = h.notifies(carol)
    assert b"<basic>closed</basic>" in blocked.body
    assert h.notifies(alice) == []
    relationship_calls.clear()
    h.publish("bob", pidf("bob", activity="busy"), etag=etag)
    assert relationship_calls == []
    assert len(h.notifies(alice)) == 1 and h.notifies(carol) == []


def test_list_levels_are_cached_per_member(relationship_calls: list[tuple[str, str]]) -> None:
    contacts: dict[str, list[tuple[str, str | None]]] = {
        aor("alice"): [(aor("bob"), None), (aor("carol"), None)]
    }
    h = Harness(directory=Directory.build(DOMAIN, contacts, {}))
    _, dialog = h.subscribe(
        "alice", f"sip:alice+contacts@{DOMAIN}", headers=[("Supported", "eventlist")]
    )
    h.publish("bob", pidf("bob"))
    h.publish("carol", pidf("carol"))
    h.publish("bob", pidf("bob", activity="busy"), etag="etag1")
    assert len(h.notifies(dialog)) == 4
    assert sorted(relationship_calls) == [(aor("bob"), aor("alice")), (aor("carol"), aor("alice"))]


def test_pump_sends_in_slices_when_asked() -> None:
    watchers = [f"w{i:03d}" for i in range(2 * PUMP_SLICE + 10)]
    h = Harness(users=[*watchers, "bob"])
    for i, watcher in enumerate(watchers):
        h.subscribe(watcher, aor("bob"), flow=h.flow(i + 1))
    service, before = h.service, len(h.stack.requests)
    # A change queued but not yet pumped (what the service does, minus the pump).
    now = h.clock.now
    device = DeviceState(Availability.BUSY)
    service.state.put_publication(Publication(aor("bob"), "e1", device, now + 60, now))
    assert service.views.refresh(aor("bob"))
    assert service.notifier.changed(aor("bob"), now) == len(watchers)

    sent: list[int] = []
    while True:
        more = service.notifier.pump(now, PUMP_SLICE)
        sent.append(len(h.stack.requests) - before - sum(sent))
        if not more:
            break
    assert sent == [PUMP_SLICE, PUMP_SLICE, 10]
    assert not service.notifier.pump(now)  # nothing left: a no-op
    fanned = [req for req, _, _ in h.stack.requests[before:]]
    assert len({req.headers.get("Call-ID") for req in fanned}) == len(watchers)
    assert all(b"<basic>open</basic>" in req.body for req in fanned)
