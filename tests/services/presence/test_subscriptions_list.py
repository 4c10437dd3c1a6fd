"""Contact lists (RFC 4662 eventlist), presence.winfo (RFC 3857) and user removal."""

from __future__ import annotations

import re

from conclave.services.presence.directory import Directory
from conclave.services.presence.rlmi import split_multipart
from conclave.services.presence.settings import PresenceSettings

from .test_service_harness import DOMAIN, Harness, aor, pidf, sub_state

LIST = f"sip:alice+contacts@{DOMAIN}"
EVENTLIST = [
    ("Supported", "eventlist"),
    ("Accept", "application/rlmi+xml, multipart/related, application/pidf+xml"),
]


def contacts(owner: str, *members: str) -> Directory:
    return Directory.build(DOMAIN, {aor(owner): [(aor(m), "Team") for m in members]}, {})


def resources(notify_body: bytes, content_type: str) -> tuple[str, list[str]]:
    parts = split_multipart(content_type, notify_body)
    rlmi = parts[0].body.decode()
    full = re.search(r'fullState="(\w+)"', rlmi)
    assert full is not None
    return full.group(1), re.findall(r'<resource uri="([^"]+)"', rlmi)


def test_list_subscription_carries_every_contact() -> None:
    users = [f"user{i:02d}" for i in range(50)]
    h = Harness(users=["alice", *users], directory=contacts("alice", *users))
    for user in users[:10]:
        h.publish(user, pidf(user))
    resp, dialog = h.subscribe("alice", LIST, headers=EVENTLIST)
    assert resp.status == 200
    assert resp.headers.get("Require") == "eventlist"
    [notify] = h.notifies(dialog)
    assert notify.headers.get("Require") == "eventlist"
    content_type = notify.headers.get("Content-Type") or ""
    assert content_type.startswith("multipart/related")
    full, uris = resources(notify.body, content_type)
    assert full == "true"
    assert uris == [aor(u) for u in users]
    parts = split_multipart(content_type, notify.body)
    assert len(parts) == 51
    assert sum(b"<basic>open</basic>" in p.body for p in parts[1:]) == 10


def test_changes_go_out_as_partial_state_merged() -> None:
    h = Harness(
        settings=PresenceSettings(merge_window=0.2),
        directory=contacts("alice", "bob", "carol", "dave"),
    )
    _, dialog = h.subscribe("alice", LIST, headers=EVENTLIST)
    h.notifies(dialog)
    h.publish("bob", pidf("bob"))
    h.publish("carol", pidf("carol"))
    h.advance(0.2)
    [partial] = h.notifies(dialog)
    full, uris = resources(partial.body, partial.headers.get("Content-Type") or "")
    assert full == "false"
    assert uris == [aor("bob"), aor("carol")]
    assert (
        b'version="2"'
        in split_multipart(partial.headers.get("Content-Type") or "", partial.body)[0].body
    )


def test_list_needs_eventlist_support() -> None:
    h = Harness(directory=contacts("alice", "bob"))
    resp, _ = h.subscribe("alice", LIST)
    assert resp.status == 421
    assert resp.headers.get("Require") == "eventlist"


def test_only_the_owner_may_subscribe_to_a_list() -> None:
    h = Harness(directory=contacts("alice", "bob"))
    resp, _ = h.subscribe("carol", LIST, headers=EVENTLIST)
    assert resp.status == 404  # for carol this is just an address with no user


def test_single_subscriptions_keep_working_without_eventlist() -> None:
    h = Harness(directory=contacts("alice", "bob"))
    resp, dialog = h.subscribe("alice", aor("bob"))
    assert resp.status == 200 and "Require" not in resp.headers
    assert h.notifies(dialog)[0].headers.get("Content-Type") == "application/pidf+xml"


def test_list_change_sends_full_state() -> None:
    h = Harness(directory=contacts("alice", "bob"))
    _, dialog = h.subscribe("alice", LIST, headers=EVENTLIST)
    h.notifies(dialog)
    h.apply(contacts("alice", "bob", "carol"))
    [notify] = h.notifies(dialog)
    assert resources(notify.body, notify.headers.get("Content-Type") or "") == (
        "true",
        [aor("bob"), aor("carol")],
    )
    h.publish("carol", pidf("carol"))
    assert len(h.notifies(dialog)) == 1


def test_unknown_and_foreign_contacts_are_terminated_instances() -> None:
    directory = Directory.build(
        DOMAIN, {aor("alice"): [(aor("ghost"), None), ("sip:x@partner.test", None)]}, {}
    )
    h = Harness(directory=directory)
    _, dialog = h.subscribe("alice", LIST, headers=EVENTLIST)
    [notify] = h.notifies(dialog)
    rlmi = split_multipart(notify.headers.get("Content-Type") or "", notify.body)[0].body
    assert rlmi.count(b'state="terminated" reason="noresource"') == 2


def test_winfo_lists_watchers_and_follows_changes() -> None:
    h = Harness()
    resp, winfo = h.subscribe("bob", aor("bob"), event="presence.winfo")
    assert resp.status == 200
    [first] = h.notifies(winfo)
    assert first.headers.get("Content-Type") == "application/watcherinfo+xml"
    assert b"<watcher " not in first.body
    _, watch = h.subscribe("alice", aor("bob"))
    [second] = h.notifies(winfo)
    assert b'status="active"' in second.body and b"sip:alice@example.test" in second.body
    assert b'version="2"' in second.body
    h.refresh(watch, 0)
    [third] = h.notifies(winfo)
    assert b"sip:alice@example.test" not in third.body


def test_winfo_of_someone_else_is_403() -> None:
    h = Harness()
    assert h.subscribe("alice", aor("bob"), event="presence.winfo")[0].status == 403


def test_removed_or_disabled_users_end_subscriptions() -> None:
    h = Harness(directory=contacts("alice", "bob"))
    h.publish("bob", pidf("bob"))
    _, removed = h.subscribe("alice", aor("bob"))
    _, disabled = h.subscribe("alice", aor("carol"))
    _, subscriber_gone = h.subscribe("dave", aor("alice"))
    _, listed = h.subscribe("alice", LIST, headers=EVENTLIST)
    for d in (removed, disabled, subscriber_gone, listed):
        h.notifies(d)
    h.users = {"alice"}
    h.service.users_changed(enabled={"alice"}, disabled={"carol", "dave"})
    h.settle()
    assert sub_state(h.notifies(removed)[-1]) == ("terminated", "noresource")
    assert sub_state(h.notifies(disabled)[-1]) == ("terminated", "deactivated")
    assert sub_state(h.notifies(subscriber_gone)[-1]) == ("terminated", "rejected")
    [update] = h.notifies(listed)
    assert b'state="terminated" reason="noresource"' in update.body
    assert h.service.state.publication_count() == 0
    assert h.service.state.subscription_count() == 1  # alice's list
