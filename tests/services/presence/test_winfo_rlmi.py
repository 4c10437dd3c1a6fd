"""watcherinfo (RFC 3858) and RLMI multipart (RFC 4662) bodies."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from conclave.services.presence.model import Availability, PresenceView
from conclave.services.presence.pidf import parse_pidf, render_pidf
from conclave.services.presence.rlmi import (
    ResourcePart,
    render_rlmi_multipart,
    split_multipart,
)
from conclave.services.presence.winfo import WatcherInfo, render_watcherinfo

WINFO = "{urn:ietf:params:xml:ns:watcherinfo}"
RLMI = "{urn:ietf:params:xml:ns:rlmi}"
LIST = "sip:alice@example.test"


# --- watcherinfo ----------------------------------------------------------------------


def test_watcherinfo_document() -> None:
    watchers = [
        WatcherInfo("w1", "sip:bob@example.test", "active", "approved", duration_subscribed=509),
        WatcherInfo(
            "w2",
            "sip:carol@partner.example",
            "pending",
            "subscribe",
            display_name='Carol "C" & co',
            expiration=3600,
        ),
    ]
    body = render_watcherinfo("sip:alice@example.test", 3, watchers)
    assert body == render_watcherinfo("sip:alice@example.test", 3, watchers)
    root = ET.fromstring(body)
    assert root.tag == f"{WINFO}watcherinfo"
    assert root.attrib == {"version": "3", "state": "full"}
    (wlist,) = root
    assert wlist.attrib == {"resource": "sip:alice@example.test", "package": "presence"}
    first, second = wlist
    assert first.attrib == {
        "id": "w1",
        "status": "active",
        "event": "approved",
        "duration-subscribed": "509",
    }
    assert first.text == "sip:bob@example.test"
    assert second.attrib["display-name"] == 'Carol "C" & co'
    assert second.attrib["expiration"] == "3600"


def test_watcherinfo_partial_and_empty() -> None:
    root = ET.fromstring(render_watcherinfo(LIST, 0, [], full=False))
    assert root.attrib["state"] == "partial"
    assert list(root[0]) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "sip:b@x", "active", "approved"), "non-empty id"),
        (("w", "sip:b@x", "approved", "approved"), "invalid watcher status"),
        (("w", "sip:b@x", "active", "blocked"), "invalid watcher event"),
    ],
)
def test_watcherinfo_validation(args: tuple[str, str, str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WatcherInfo(*args)
    with pytest.raises(ValueError, match="negative"):
        WatcherInfo("w", "sip:b@x", "active", "approved", expiration=-1)
    with pytest.raises(ValueError, match="negative"):
        render_watcherinfo(LIST, -1, [])


# --- RLMI multipart -------------------------------------------------------------------


def pidf(user: str, state: Availability) -> bytes:
    return render_pidf(f"sip:{user}@example.test", PresenceView(state, note=f"{user}'s note"))


def test_list_notification_structure() -> None:
    resources = [
        ResourcePart("sip:bob@example.test", "Bob", "active", pidf("bob", Availability.BUSY), None),
        ResourcePart("sip:carol@partner.example", None, "pending", None, None),
        ResourcePart(
            "sip:dave@example.test", "Dave", "active", pidf("dave", Availability.AWAY), "d@x.test"
        ),
        ResourcePart("sip:eve@example.test", None, "terminated", None, None, reason="rejected"),
    ]
    content_type, body = render_rlmi_multipart(
        LIST + ";list=buddies", 7, full_state=True, resources=resources, boundary="b0und4ry"
    )
    assert render_rlmi_multipart(
        LIST + ";list=buddies", 7, full_state=True, resources=resources, boundary="b0und4ry"
    ) == (content_type, body)
    root_cid = content_type.split('start="<', 1)[1].split(">", 1)[0]
    assert content_type == (
        f'multipart/related;type="application/rlmi+xml";start="<{root_cid}>";boundary="b0und4ry"'
    )
    parts = split_multipart(content_type, body)
    assert len(parts) == 3  # RLMI, then one PIDF per resource with a body
    rlmi, bob, dave = parts
    assert rlmi.headers["content-id"] == f"<{root_cid}>"
    assert rlmi.headers["content-type"].startswith("application/rlmi+xml")
    assert rlmi.headers["content-transfer-encoding"] == "binary"
    root = ET.fromstring(rlmi.body)
    assert root.tag == f"{RLMI}list"
    assert root.attrib == {
        "uri": "sip:alice@example.test;list=buddies",
        "version": "7",
        "fullState": "true",
    }
    uris = [r.attrib["uri"] for r in root]
    assert uris == [r.uri for r in resources]
    instances = [r.find(f"{RLMI}instance") for r in root]
    assert all(i is not None for i in instances)
    states = [i.attrib["state"] for i in instances if i is not None]
    assert states == ["active", "pending", "active", "terminated"]
    assert [r.findtext(f"{RLMI}name") for r in root] == ["Bob", None, "Dave", None]
    bob_instance, pending, dave_instance, terminated = (i for i in instances if i is not None)
    assert "cid" not in pending.attrib and "cid" not in terminated.attrib
    assert terminated.attrib["reason"] == "rejected"
    assert dave_instance.attrib["cid"] == "d@x.test"
    assert bob.headers["content-id"] == f"<{bob_instance.attrib['cid']}>"
    assert dave.headers["content-id"] == "<d@x.test>"
    assert bob.headers["content-type"].startswith("application/pidf+xml")
    # Each part's body is the PIDF exactly, and parses.
    assert bob.body == resources[0].body
    assert parse_pidf(dave.body, entity="sip:dave@example.test").availability is Availability.AWAY
    # Instance ids are unique and stable.
    ids = [i.attrib["id"] for i in instances if i is not None]
    assert len(set(ids)) == 4
    assert ResourcePart("sip:bob@example.test").instance == bob_instance.attrib["id"]


def test_fifty_contacts_in_one_notification() -> None:
    resources = [
        ResourcePart(f"sip:user{n}@example.test", f"User {n}", "active", pidf(f"user{n}", state))
        for n, state in enumerate(list(Availability) * 6)
        if n < 50
    ]
    content_type, body = render_rlmi_multipart(
        LIST, 1, full_state=True, resources=resources, boundary="=_conclave_1"
    )
    parts = split_multipart(content_type, body)
    assert len(parts) == 51
    assert [p.body for p in parts[1:]] == [r.body for r in resources]


def test_partial_state_flag() -> None:
    content_type, body = render_rlmi_multipart(
        LIST, 2, full_state=False, resources=[], boundary="x"
    )
    (rlmi,) = split_multipart(content_type, body)
    assert ET.fromstring(rlmi.body).attrib["fullState"] == "false"


def test_multipart_errors() -> None:
    body = pidf("bob", Availability.AVAILABLE)
    one = [ResourcePart("sip:bob@example.test", body=body)]
    for boundary in ["", "x" * 71, "bad\nboundary", "ends with space "]:
        with pytest.raises(ValueError, match="invalid multipart boundary"):
            render_rlmi_multipart(LIST, 1, full_state=True, resources=one, boundary=boundary)
    clash = [ResourcePart("sip:bob@example.test", body=b"a note -- --sep here")]
    with pytest.raises(ValueError, match="occurs inside a body"):
        render_rlmi_multipart(LIST, 1, full_state=True, resources=clash, boundary="sep")
    twice = [
        ResourcePart("sip:bob@example.test", body=body, cid="same@x"),
        ResourcePart("sip:dave@example.test", body=body, cid="same@x"),
    ]
    with pytest.raises(ValueError, match="duplicate Content-ID"):
        render_rlmi_multipart(LIST, 1, full_state=True, resources=twice, boundary="b")
    with pytest.raises(ValueError, match="invalid instance state"):
        ResourcePart("sip:bob@example.test", state="open")
    with pytest.raises(ValueError, match="invalid Content-ID"):
        ResourcePart("sip:bob@example.test", body=body, cid="<no brackets>")
    with pytest.raises(ValueError, match="needs a body"):
        ResourcePart("sip:bob@example.test", cid="a@b")


def test_split_multipart_errors() -> None:
    with pytest.raises(ValueError, match="no boundary"):
        split_multipart("multipart/related", b"")
    with pytest.raises(ValueError, match="no closing"):
        split_multipart('multipart/related;boundary="b"', b"--b\r\n\r\nx\r\n")
    parts = split_multipart("multipart/mixed; boundary=b", b"preamble\r\n--b\r\n\r\nx\r\n--b--\r\n")
    assert parts[0].headers == {} and parts[0].body == b"x"
