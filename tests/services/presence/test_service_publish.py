"""PUBLISH (RFC 3903) against the presence service on a fake stack."""

from __future__ import annotations

import pytest

from conclave.services.presence.model import Availability
from conclave.services.presence.publications import MAX_PUBLICATIONS_PER_USER, RateLimiter
from conclave.services.presence.settings import PresenceSettings

from .test_service_harness import Harness, aor, pidf

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.test">&lol2;</presence>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.test">&x;</presence>"""
HUGE = pidf("bob", note="x" * 40_000)


def test_initial_publish_gets_etag_and_expires() -> None:
    h = Harness()
    resp = h.publish("bob", pidf("bob"), expires=120)
    assert resp.status == 200
    assert resp.headers.get("SIP-ETag") == "etag1"
    assert resp.headers.get("Expires") == "120"
    assert h.service.views.view(aor("bob")).availability is Availability.AVAILABLE


def test_default_and_maximum_expires() -> None:
    h = Harness(settings=PresenceSettings(default_expires=300, max_expires=900))
    assert h.publish("bob", pidf("bob")).headers.get("Expires") == "300"
    assert h.publish("carol", pidf("carol"), expires=99999).headers.get("Expires") == "900"


def test_too_brief_is_423_with_min_expires() -> None:
    h = Harness(settings=PresenceSettings(min_expires=60))
    resp = h.publish("bob", pidf("bob"), expires=10)
    assert resp.status == 423
    assert resp.headers.get("Min-Expires") == "60"
    assert h.service.state.publication_count() == 0


def test_refresh_modify_remove_each_get_a_new_etag() -> None:
    h = Harness()
    first = h.publish("bob", pidf("bob"), expires=120).headers.get("SIP-ETag")
    refreshed = h.publish("bob", etag=first, expires=120)
    assert refreshed.status == 200
    second = refreshed.headers.get("SIP-ETag")
    assert second not in (None, first)
    # The old tag is gone (RFC 3903 §4.2: each success replaces the tag).
    assert h.publish("bob", etag=first, expires=120).status == 412
    modified = h.publish("bob", pidf("bob", activity="busy"), etag=second, expires=120)
    assert modified.status == 200
    assert h.service.views.view(aor("bob")).availability is Availability.BUSY
    third = modified.headers.get("SIP-ETag")
    removed = h.publish("bob", etag=third, expires=0)
    assert removed.status == 200 and removed.headers.get("Expires") == "0"
    assert h.service.state.publication_count() == 0
    assert h.service.views.view(aor("bob")).availability is Availability.OFFLINE


def test_unknown_etag_is_412() -> None:
    h = Harness()
    assert h.publish("bob", pidf("bob"), etag="nonsense").status == 412


def test_someone_elses_etag_is_412() -> None:
    h = Harness()
    tag = h.publish("bob", pidf("bob")).headers.get("SIP-ETag")
    assert h.publish("carol", etag=tag).status == 412


def test_publication_expires() -> None:
    h = Harness()
    h.publish("bob", pidf("bob"), expires=60)
    h.advance(59)
    assert h.service.state.publication_count() == 1
    h.advance(2)
    assert h.service.state.publication_count() == 0
    assert h.service.views.view(aor("bob")).availability is Availability.OFFLINE


@pytest.mark.parametrize("event", ["dialog", "message-summary", "presence.winfo"])
def test_other_events_are_489_with_allow_events(event: str) -> None:
    h = Harness()
    resp = h.publish("bob", pidf("bob"), event=event)
    assert resp.status == 489
    assert resp.headers.get("Allow-Events") == "presence"


def test_missing_event_is_489() -> None:
    h = Harness()
    req = h.request("PUBLISH", aor("bob"), user="bob", headers=[("Content-Type", "x/y")])
    assert h.send(req, user="bob").status == 489


def test_wrong_content_type_is_415_with_accept() -> None:
    h = Harness()
    resp = h.publish("bob", b"hello", content_type="text/plain")
    assert resp.status == 415
    assert resp.headers.get("Accept") == "application/pidf+xml"


def test_publishing_someone_else_is_403() -> None:
    h = Harness()
    resp = h.publish("bob", pidf("alice"), uri=aor("alice"))
    assert resp.status == 403
    assert h.service.state.publication_count() == 0


def test_no_body_without_etag_is_400() -> None:
    h = Harness()
    assert h.publish("bob").status == 400


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (BOMB, "bomb"),
        (XXE, "external entity"),
        (HUGE, "huge"),
        (b"<presence", "truncated"),
        (pidf("alice"), "entity of someone else"),
    ],
)
def test_malicious_or_malformed_body_is_400_and_changes_nothing(body: bytes, why: str) -> None:
    h = Harness()
    good = h.publish("bob", pidf("bob", note="fine"), expires=600)
    tag = good.headers.get("SIP-ETag")
    _, watch = h.subscribe("alice", aor("bob"))
    before = len(h.notifies(watch))
    state_before = h.service.state.publication(tag or "")
    for etag in (None, tag):
        resp = h.publish("bob", body, etag=etag, expires=600)
        assert resp.status == 400, why
        assert resp.reason.startswith("Bad PIDF: ")
    # Nothing happened: same publication under the same tag, no NOTIFY.
    assert h.service.state.publication(tag or "") is state_before
    assert h.service.state.publication_count() == 1
    assert len(h.notifies(watch)) == 0 and before == 1


def test_rate_limit_answers_503_with_retry_after() -> None:
    h = Harness(settings=PresenceSettings(publish_rate=1.0, publish_burst=2, merge_window=0))
    tag = h.publish("bob", pidf("bob")).headers.get("SIP-ETag")
    tag = h.publish("bob", pidf("bob", activity="busy"), etag=tag).headers.get("SIP-ETag")
    limited = h.publish("bob", pidf("bob", activity="away"), etag=tag)
    assert limited.status == 503
    assert limited.headers.get("Retry-After") == "1"
    assert h.service.views.view(aor("bob")).availability is Availability.BUSY
    # Refreshes and removal are never limited.
    refreshed = h.publish("bob", etag=tag)
    assert refreshed.status == 200
    assert h.publish("bob", etag=refreshed.headers.get("SIP-ETag"), expires=0).status == 200
    # Another user has their own bucket; time refills bob's.
    assert h.publish("carol", pidf("carol")).status == 200
    h.advance(1.0)
    assert h.publish("bob", pidf("bob")).status == 200


def test_rate_limiter_buckets() -> None:
    limiter = RateLimiter(rate=2.0, burst=1)
    assert limiter.take("a", 0.0) == 0
    assert limiter.take("a", 0.0) == pytest.approx(0.5)
    assert limiter.take("a", 0.5) == 0
    limiter.prune(100.0)
    assert limiter.take("a", 100.0) == 0


def test_devices_are_aggregated_dnd_wins() -> None:
    h = Harness()
    h.publish("bob", pidf("bob"))
    h.publish("bob", pidf("bob", other="do-not-disturb"))
    assert h.service.views.view(aor("bob")).availability is Availability.DO_NOT_DISTURB


def test_appear_offline_hides_other_devices() -> None:
    h = Harness()
    h.publish("bob", pidf("bob"))
    h.publish("bob", pidf("bob", other="appear-offline"))
    assert h.service.views.view(aor("bob")).availability is Availability.OFFLINE


def test_too_many_devices_replaces_the_stalest() -> None:
    h = Harness()
    tags = []
    for _ in range(MAX_PUBLICATIONS_PER_USER):
        h.advance(1)
        tags.append(h.publish("bob", pidf("bob")).headers.get("SIP-ETag"))
    h.advance(1)
    assert h.publish("bob", pidf("bob")).status == 200
    assert len(h.service.state.publications(aor("bob"))) == MAX_PUBLICATIONS_PER_USER
    assert h.service.state.publication(tags[0] or "") is None


def test_in_a_call_raises_available() -> None:
    h = Harness()
    h.publish("bob", pidf("bob"))
    h.service.set_in_call(aor("bob"), True)
    assert h.service.views.view(aor("bob")).availability is Availability.IN_A_CALL
    h.service.set_in_call(aor("bob"), False)
    assert h.service.views.view(aor("bob")).availability is Availability.AVAILABLE
