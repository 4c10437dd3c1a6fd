"""Privacy: levels filter what each watcher sees; Blocked is indistinguishable from Offline."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conclave.services.presence.directory import Directory
from conclave.services.presence.model import OFFLINE_VIEW, Relationship, filter_view
from conclave.services.presence.settings import PresenceSettings
from conclave.services.presence.views import offline_pidf

from .test_service_harness import DOMAIN, Harness, aor, pidf, sub_state

RICH = pidf("bob", activity="meeting", note="budget review")


def rules(owner: str, **targets: str) -> Directory:
    return Directory.build(DOMAIN, {}, {aor(owner): {aor(t): lvl for t, lvl in targets.items()}})


@pytest.mark.parametrize(
    ("level", "sees_activity", "sees_note"),
    [
        ("external", False, False),
        ("colleagues", True, False),
        ("workgroup", True, True),
        ("friends", True, True),
    ],
)
def test_each_level_sees_its_items(level: str, sees_activity: bool, sees_note: bool) -> None:
    h = Harness(directory=rules("bob", alice=level))
    h.publish("bob", RICH)
    _, dialog = h.subscribe("alice", aor("bob"))
    [notify] = h.notifies(dialog)
    assert b"<basic>open</basic>" in notify.body
    assert (b"<rpid:meeting/>" in notify.body) is sees_activity
    assert (b"budget review" in notify.body) is sees_note


def test_default_level_in_the_domain_is_colleagues() -> None:
    h = Harness()
    h.publish("bob", RICH)
    _, dialog = h.subscribe("alice", aor("bob"))
    [notify] = h.notifies(dialog)
    assert b"<rpid:meeting/>" in notify.body and b"budget review" not in notify.body


def test_a_domain_rule_applies_and_a_contact_rule_beats_it() -> None:
    directory = Directory.build(
        DOMAIN, {}, {aor("bob"): {DOMAIN: "external", aor("carol"): "workgroup"}}
    )
    h = Harness(directory=directory)
    h.publish("bob", RICH)
    _, alice = h.subscribe("alice", aor("bob"))
    _, carol = h.subscribe("carol", aor("bob"))
    assert b"<rpid:meeting/>" not in h.notifies(alice)[0].body
    assert b"budget review" in h.notifies(carol)[0].body


def test_self_sees_everything() -> None:
    h = Harness()
    h.publish("bob", pidf("bob", note="private"))
    _, dialog = h.subscribe("bob", aor("bob"))
    assert b"private" in h.notifies(dialog)[0].body


def test_offline_document_is_the_same_at_every_level() -> None:
    # The precondition of "Blocked looks Offline": an offline user's document
    # does not depend on the watcher's level.
    assert {filter_view(OFFLINE_VIEW, level) for level in Relationship} == {OFFLINE_VIEW}


# -- Blocked versus Offline ------------------------------------------------------------------


def _script(h: Harness, *, owner_acts: bool) -> list[tuple[float, bytes]]:
    """Alice watches bob; bob (if ``owner_acts``) lives his day; alice refreshes; it expires."""
    _, dialog = h.subscribe("alice", aor("bob"), expires=120)

    def owner(action: Callable[[], object]) -> None:
        if owner_acts:
            action()

    tag: list[str | None] = [None]

    def pub(body: bytes) -> None:
        tag[0] = h.publish("bob", body, etag=tag[0], expires=3600).headers.get("SIP-ETag")

    h.advance(5)
    owner(lambda: pub(pidf("bob", note="morning")))
    h.advance(0.1)
    owner(lambda: pub(pidf("bob", activity="busy", note="call me later")))
    h.advance(10)
    owner(lambda: h.service.set_in_call(aor("bob"), True))
    h.advance(30)
    h.refresh(dialog, 120)
    h.advance(0.05)
    owner(lambda: h.service.set_in_call(aor("bob"), False))
    h.advance(20)
    owner(lambda: pub(pidf("bob", other="appear-offline")))
    h.advance(20)
    owner(lambda: pub(pidf("bob", other="do-not-disturb")))
    h.advance(200)  # the subscription expires
    return [(t, r.serialise()) for t, r in h.log]


@pytest.mark.parametrize("window", [0.0, 0.2])
def test_blocked_watcher_sees_exactly_what_an_offline_users_watcher_sees(window: float) -> None:
    settings = PresenceSettings(merge_window=window)
    blocked = _script(
        Harness(settings=settings, directory=rules("bob", alice="blocked")), owner_acts=True
    )
    offline = _script(Harness(settings=settings), owner_acts=False)
    visible = _script(Harness(settings=settings), owner_acts=True)
    # Same messages, byte for byte, at the same moments.
    assert blocked == offline
    assert [t for t, _ in blocked] == [t for t, _ in offline]
    # Initial, after the refresh, final (timeout): nothing when bob changes.
    assert len(blocked) == 3
    assert blocked[0][1].endswith(offline_pidf(aor("bob"), aor("alice")))
    # The comparison can fail: an unblocked watcher sees bob's day.
    assert len(visible) > len(blocked)


def test_blocked_list_member_looks_offline_in_rlmi() -> None:
    def run(block: bool, acts: bool) -> list[bytes]:
        directory = Directory.build(
            DOMAIN,
            {aor("alice"): [(aor("bob"), None), (aor("carol"), None)]},
            {aor("bob"): {aor("alice"): "blocked"}} if block else {},
        )
        h = Harness(directory=directory)
        _, dialog = h.subscribe(
            "alice", f"sip:alice+contacts@{DOMAIN}", headers=[("Supported", "eventlist")]
        )
        h.advance(1)
        if acts:
            h.publish("bob", pidf("bob", note="x"))
        h.advance(1)
        h.publish("carol", pidf("carol"))  # carol is visible in both runs
        h.advance(1)
        h.refresh(dialog, 600)
        return [r.serialise() for r in h.notifies(dialog)]

    blocked, offline = run(block=True, acts=True), run(block=False, acts=False)
    assert blocked == offline
    assert len(blocked) == 3  # full, partial (carol), full after the refresh
    assert run(block=False, acts=True) != offline


def test_blocking_later_looks_like_going_offline_and_back() -> None:
    h = Harness()
    h.publish("bob", pidf("bob"))
    _, dialog = h.subscribe("alice", aor("bob"))
    assert len(h.notifies(dialog)) == 1
    h.apply(rules("bob", alice="blocked"))
    [gone] = h.notifies(dialog)
    assert gone.body == offline_pidf(aor("bob"), aor("alice"))
    h.publish("bob", pidf("bob", activity="busy"))
    assert h.notifies(dialog) == []
    h.apply(Directory(DOMAIN))
    [back] = h.notifies(dialog)
    assert b"<basic>open</basic>" in back.body


def test_privacy_change_that_changes_nothing_visible_sends_nothing() -> None:
    h = Harness()
    h.publish("bob", pidf("bob"))  # no note: colleagues and workgroup see the same
    _, dialog = h.subscribe("alice", aor("bob"))
    h.notifies(dialog)
    h.apply(rules("bob", alice="workgroup"))
    assert h.notifies(dialog) == []


# -- watchers from other domains -------------------------------------------------------------


def test_external_watcher_stays_pending_until_allowed() -> None:
    h = Harness()
    h.publish("bob", RICH)
    _, winfo = h.subscribe("bob", aor("bob"), event="presence.winfo")
    resp, dialog = h.subscribe("eve", aor("bob"), domain="partner.test")
    assert resp.status == 200
    [pending] = h.notifies(dialog)
    assert sub_state(pending) == ("pending", None)
    assert pending.body == b"" and "Content-Type" not in pending.headers
    shown = h.notifies(winfo)[-1].body
    assert b'status="pending"' in shown and b"sip:eve@partner.test" in shown
    # Bob's state changes: still nothing for eve.
    h.publish("bob", pidf("bob", note="secret"))
    assert h.notifies(dialog) == []
    # Bob allows eve (any rule naming her or her domain decides).
    h.apply(Directory.build(DOMAIN, {}, {aor("bob"): {"partner.test": "external"}}))
    [active] = h.notifies(dialog)
    assert sub_state(active) == ("active", None)
    assert b"<basic>open</basic>" in active.body
    assert b"budget review" not in active.body and b"secret" not in active.body
    assert b'event="approved"' in h.notifies(winfo)[-1].body


def test_external_watcher_in_the_owners_contacts_is_allowed() -> None:
    directory = Directory.build(DOMAIN, {aor("bob"): [("sip:eve@partner.test", "Partners")]}, {})
    h = Harness(directory=directory)
    _, dialog = h.subscribe("eve", aor("bob"), domain="partner.test")
    assert sub_state(h.notifies(dialog)[0]) == ("active", None)


def test_allow_policy_shows_external_at_once() -> None:
    h = Harness(settings=PresenceSettings(merge_window=0, external_watchers="allow"))
    h.publish("bob", RICH)
    _, dialog = h.subscribe("eve", aor("bob"), domain="partner.test")
    [notify] = h.notifies(dialog)
    assert sub_state(notify) == ("active", None)
    assert b"<rpid:meeting/>" not in notify.body  # External: availability only
