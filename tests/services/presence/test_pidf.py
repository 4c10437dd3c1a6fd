"""PIDF: the publication mapping table, hostile documents, and deterministic rendering."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conclave.services.presence.model import (
    ACTIVITY_STATES,
    OFFLINE_VIEW,
    Availability,
    DeviceState,
    PresenceView,
    Relationship,
    aggregate,
    filter_view,
)
from conclave.services.presence.pidf import (
    MAX_NOTE_LENGTH,
    MAX_PIDF_SIZE,
    MAX_XML_DEPTH,
    MAX_XML_ELEMENTS,
    PidfError,
    parse_pidf,
    render_pidf,
)

A = Availability
ENTITY = "sip:alice@example.test"
HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
    ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
    ' xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"'
    ' entity="sip:alice@example.test">\n'
)


def doc(inner: str, head: str = HEAD) -> bytes:
    return (head + inner + "</presence>\n").encode()


def tup(basic: str = "open", extra: str = "") -> str:
    return f'<tuple id="t1"><status><basic>{basic}</basic></status>{extra}</tuple>\n'


def person(*activities: str, other: str | None = None, note: str | None = None) -> str:
    inner = "".join(f"<rpid:{a}/>" for a in activities)
    if other is not None:
        inner += f"<rpid:other>{other}</rpid:other>"
    body = f"<rpid:activities>{inner}</rpid:activities>" if inner else ""
    if note is not None:
        body += f"<dm:note>{note}</dm:note>"
    return f'<dm:person id="p1">{body}</dm:person>\n'


def parse(body: bytes) -> DeviceState:
    return parse_pidf(body, entity=ENTITY)


# --- what a client publishes -> which state (docs/presence.md, "Publishing") -------------

MAPPING = [
    ("open tuple", doc(tup("open")), A.AVAILABLE),
    ("closed tuple", doc(tup("closed")), A.OFFLINE),
    ("baresip typo 'unkown' is closed", doc(tup("unkown")), A.OFFLINE),
    ("one open tuple of two", doc(tup("closed") + tup("open")), A.AVAILABLE),
    ("baresip empty activities", doc(person() + tup("open")), A.AVAILABLE),
    ("busy", doc(person("busy") + tup()), A.BUSY),
    ("on-the-phone", doc(person("on-the-phone") + tup()), A.IN_A_CALL),
    ("meeting", doc(person("meeting") + tup()), A.BUSY),
    ("appointment", doc(person("appointment") + tup()), A.BUSY),
    ("meal", doc(person("meal") + tup()), A.BE_RIGHT_BACK),
    ("away", doc(person("away") + tup()), A.AWAY),
    ("vacation", doc(person("vacation") + tup()), A.OFF_WORK),
    ("holiday", doc(person("holiday") + tup()), A.OFF_WORK),
    ("sleeping", doc(person("sleeping") + tup()), A.OFF_WORK),
    ("permanent-absence", doc(person("permanent-absence") + tup()), A.OFF_WORK),
    ("working says nothing", doc(person("working") + tup()), A.AVAILABLE),
    ("least available wins", doc(person("on-the-phone", "meeting") + tup()), A.BUSY),
    ("closed beats activities", doc(person("busy") + tup("closed")), A.OFFLINE),
    ("person only", doc(person("away")), A.AWAY),
    ("nothing at all", doc(""), A.OFFLINE),
    ("explicit available", doc(person(other="available") + tup()), A.AVAILABLE),
    ("explicit busy", doc(person(other="busy") + tup()), A.BUSY),
    ("explicit dnd", doc(person("busy", other="do-not-disturb") + tup()), A.DO_NOT_DISTURB),
    ("explicit DND alias", doc(person(other=" DND ") + tup()), A.DO_NOT_DISTURB),
    ("explicit brb", doc(person("away", other="be-right-back") + tup()), A.BE_RIGHT_BACK),
    ("explicit away", doc(person(other="Away") + tup()), A.AWAY),
    ("explicit off work", doc(person("away", other="off work") + tup()), A.OFF_WORK),
    ("explicit appear offline", doc(person(other="appear-offline") + tup()), A.APPEAR_OFFLINE),
    (
        "explicit beats closed",
        doc(person(other="appear-offline") + tup("closed")),
        A.APPEAR_OFFLINE,
    ),
    ("explicit beats activities", doc(person("away", other="available") + tup()), A.AVAILABLE),
    ("free-text other is ignored", doc(person(other="out for coffee") + tup()), A.AVAILABLE),
    (
        "pre-RFC 4479 activities in the tuple status",
        doc(
            '<tuple id="t"><status><basic>open</basic>'
            "<rpid:activities><rpid:away/></rpid:activities></status></tuple>"
        ),
        A.AWAY,
    ),
    (
        "unknown namespaces are ignored",
        doc(person("busy") + tup(extra='<x:y xmlns:x="urn:x"><x:z/></x:y>')),
        A.BUSY,
    ),
]


@pytest.mark.parametrize(("name", "body", "state"), MAPPING, ids=[m[0] for m in MAPPING])
def test_publication_mapping(name: str, body: bytes, state: A) -> None:
    assert parse(body).availability is state


def test_every_state_can_be_published_explicitly() -> None:
    # <rpid:other>TOKEN</rpid:other> is plain RPID: any client can send it.
    for state in Availability:
        body = doc(person(other=state.token) + tup())
        assert parse(body).availability is state


def test_linphone_style_document() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        b'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        b'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.test">\n'
        b'  <tuple id="qmdqbe"><status><basic>open</basic></status>'
        b"<contact>sip:alice@192.0.2.1:5060</contact><timestamp>2026-11-26T10:00:00Z</timestamp>"
        b"</tuple>\n"
        b'  <dm:person id="ldnyxd"><rpid:activities><rpid:meeting/></rpid:activities>'
        b'<dm:note xml:lang="en">In the board room</dm:note></dm:person>\n'
        b'  <dm:device id="d1"><dm:deviceID>urn:uuid:0f7e9a1c-2f50-4a1e-9a0e-3d2c1b0a9f88'
        b"</dm:deviceID></dm:device>\n"
        b"</presence>\n"
    )
    assert parse(body) == DeviceState(
        A.BUSY,
        note="In the board room",
        activities=("meeting",),
        device="urn:uuid:0f7e9a1c-2f50-4a1e-9a0e-3d2c1b0a9f88",
    )


def test_note_sources_and_limits() -> None:
    person_note = person(note="person note")
    top = "<note>presence note</note>\n"
    in_tuple = tup(extra="<note>tuple note</note>")
    assert parse(doc(in_tuple + top + person_note)).note == "person note"
    assert parse(doc(in_tuple + top)).note == "presence note"
    assert parse(doc(in_tuple)).note == "tuple note"
    assert parse(doc(tup() + "<note>   </note>")).note is None
    long = parse(doc(tup() + person(note="é" * (MAX_NOTE_LENGTH + 50)))).note
    assert long == "é" * MAX_NOTE_LENGTH
    assert parse(doc(tup() + person(note="a &amp; b &lt;3 <![CDATA[<x>]]>"))).note == (
        "a & b <3 <x>"
    )


def test_place() -> None:
    lt = (
        '<dm:person id="p"><rpid:place-type><lt:home xmlns:lt='
        '"urn:ietf:params:xml:ns:location-type"/></rpid:place-type></dm:person>'
    )
    assert parse(doc(tup() + lt)).place == "home"
    other = (
        '<dm:person id="p"><rpid:place-type><rpid:other>Room 4</rpid:other>'
        "</rpid:place-type></dm:person>"
    )
    assert parse(doc(tup() + other)).place == "Room 4"


@pytest.mark.parametrize(
    "entity",
    [
        "sip:alice@example.test",
        "sips:alice@EXAMPLE.test",
        "pres:alice@example.test",
        "sip:alice@example.test;transport=tls",
    ],
)
def test_entity_forms_accepted(entity: str) -> None:
    head = HEAD.replace('entity="sip:alice@example.test"', f'entity="{entity}"')
    assert parse(doc(tup(), head)).availability is A.AVAILABLE


@pytest.mark.parametrize(
    ("entity_attr", "reason"),
    [
        ('entity="sip:mallory@example.test"', "does not match"),
        ('entity="sip:Alice@example.test"', "does not match"),  # user part is case-sensitive
        ('entity="sip:alice@example.org"', "does not match"),
        ('entity="tel:+4412345"', "not a SIP or pres URI"),
        ('entity=""', "no entity"),
        ("", "no entity"),
    ],
)
def test_entity_must_be_the_publisher(entity_attr: str, reason: str) -> None:
    head = HEAD.replace('entity="sip:alice@example.test"', entity_attr)
    with pytest.raises(PidfError, match=reason):
        parse(doc(tup(), head))


# --- hostile and broken documents ----------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test">
<tuple id="t"><status><basic>open</basic></status><note>&lol9;</note></tuple></presence>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE presence [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test">
<tuple id="t"><status><basic>open</basic></status><note>&xxe;</note></tuple></presence>
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE presence [<!ENTITY % remote SYSTEM "http://192.0.2.1/evil.dtd"> %remote;]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test"/>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE presence SYSTEM "http://192.0.2.1/pidf.dtd">
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test"/>
"""

HOSTILE = [
    ("billion laughs", BILLION_LAUGHS, "document type declarations"),
    ("external entity", EXTERNAL_ENTITY, "document type declarations"),
    ("parameter entity", PARAMETER_ENTITY, "document type declarations"),
    ("external DTD", EXTERNAL_DTD, "document type declarations"),
    ("undeclared entity", doc(tup() + "<note>&xxe;</note>"), "malformed XML: undefined entity"),
    ("huge document", doc(tup() + "<note>" + "x" * MAX_PIDF_SIZE + "</note>"), "larger than"),
    ("deep nesting", doc(tup() + "<n>" * 50 + "</n>" * 50), "nested too deeply"),
    (
        "very deep nesting within the size limit",
        doc("<n>" * 3000 + "</n>" * 3000),
        "nested too deeply",
    ),
    ("too many elements", doc("<x/>" * (MAX_XML_ELEMENTS + 1)), "too many XML elements"),
    ("latin-1 bytes", doc(tup() + "<note>caf\u00e9</note>").replace(b"\xc3\xa9", b"\xe9"), "UTF-8"),
    (
        "declared latin-1",
        doc(tup()).replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"'),
        "only the UTF-8",
    ),
    ("UTF-16", doc(tup()).decode().encode("utf-16"), "UTF-8"),
    ("garbage", b"\x00\x01\x02 hello \xff", "UTF-8"),
    ("not XML", b"open", "malformed XML"),
    ("empty", b"", "empty body"),
    ("whitespace", b"  \r\n", "empty body"),
    ("truncated", doc(tup())[:-20], "malformed XML"),
    ("two roots", doc(tup()) + b"<presence/>", "malformed XML"),
    ("wrong root", b'<presense xmlns="urn:ietf:params:xml:ns:pidf"/>', "not a PIDF document"),
    ("no namespace", b'<presence entity="sip:alice@example.test"/>', "not a PIDF document"),
    ("lpidf/xpidf", b'<presence><presentity uri="sip:alice@example.test"/></presence>', "PIDF"),
    ("invalid char ref", doc(tup() + "<note>&#1;</note>"), "malformed XML"),
    ("unbound prefix", doc(tup() + "<q:note/>"), "malformed XML"),
]


@pytest.mark.parametrize(("name", "body", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_documents_give_pidf_error_only(name: str, body: bytes, reason: str) -> None:
    with pytest.raises(PidfError) as info:
        parse(body)
    assert reason in info.value.reason
    assert info.value.status == 400
    assert "\n" not in info.value.reason


def test_limits_are_sane() -> None:
    assert 4096 <= MAX_PIDF_SIZE <= 64 * 1024
    # A document right at the depth limit parses.
    depth_ok = doc(tup() + "<n>" * (MAX_XML_DEPTH - 1) + "</n>" * (MAX_XML_DEPTH - 1))
    assert parse(depth_ok).availability is A.AVAILABLE


VALID = doc(person("meeting", note="hello") + tup())


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(body: bytes) -> None:
    try:
        result = parse(body)
    except PidfError:
        return
    assert isinstance(result, DeviceState)


@settings(max_examples=300)
@given(st.integers(0, len(VALID) - 1), st.integers(0, 255), st.integers(0, 3))
def test_fuzz_mutated_document(position: int, value: int, mode: int) -> None:
    data = bytearray(VALID)
    if mode == 0:
        data[position] = value
    elif mode == 1:
        del data[position]
    elif mode == 2:
        data.insert(position, value)
    else:
        data = data[:position]
    try:
        result = parse(bytes(data))
    except PidfError:
        return
    assert isinstance(result, DeviceState)


# --- rendering ------------------------------------------------------------------------


def test_render_offline_is_one_closed_tuple() -> None:
    body = render_pidf(ENTITY, OFFLINE_VIEW)
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        b' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
        b' xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.test">\n'
        b'  <tuple id="t1">\n'
        b"    <status><basic>closed</basic></status>\n"
        b"  </tuple>\n"
        b"</presence>\n"
    )
    # Appear Offline and stray data render exactly the same.
    sneaky = PresenceView(A.APPEAR_OFFLINE, note="I am here", activities=("busy",))
    assert render_pidf(ENTITY, sneaky) == body
    assert render_pidf(ENTITY, PresenceView(A.OFFLINE, note="x", place="home")) == body


def test_blocked_body_is_byte_identical_to_offline() -> None:
    busy = aggregate([DeviceState(A.BUSY, note="secret", activities=("meeting",))])
    offline = aggregate([])
    hidden = aggregate([DeviceState(A.APPEAR_OFFLINE), DeviceState(A.AVAILABLE, note="x")])
    expected = render_pidf(ENTITY, offline)
    assert render_pidf(ENTITY, filter_view(busy, Relationship.BLOCKED)) == expected
    for level in Relationship:
        assert render_pidf(ENTITY, filter_view(offline, level)) == expected
        assert render_pidf(ENTITY, filter_view(hidden, level)) == expected


@pytest.mark.parametrize(
    ("state", "standard", "explicit"),
    [
        (A.AVAILABLE, [], None),
        (A.IN_A_CALL, ["on-the-phone"], None),
        (A.BUSY, ["busy"], None),
        (A.DO_NOT_DISTURB, ["busy"], "do-not-disturb"),
        (A.BE_RIGHT_BACK, ["away"], "be-right-back"),
        (A.AWAY, ["away"], None),
        (A.OFF_WORK, ["away"], "off-work"),
    ],
)
def test_rendered_activities(state: A, standard: list[str], explicit: str | None) -> None:
    text = render_pidf(ENTITY, PresenceView(state)).decode()
    assert "<basic>open</basic>" in text  # baresip's regex reads exactly this
    assert re.findall(r"<rpid:([a-z-]+)/>", text) == standard
    assert re.findall(r"<rpid:other>([^<]*)</rpid:other>", text) == ([explicit] if explicit else [])


def test_render_escapes_and_is_deterministic() -> None:
    view = PresenceView(A.AWAY, note='<b>"Back" & soon</b>\x00', place="my desk")
    first = render_pidf('sip:a"b@example.test', view)
    assert first == render_pidf('sip:a"b@example.test', view)
    text = first.decode()
    assert 'entity="sip:a&quot;b@example.test"' in text
    assert '<dm:note>&lt;b&gt;"Back" &amp; soon&lt;/b&gt;\ufffd</dm:note>' in text
    assert "<rpid:place-type><rpid:other>my desk</rpid:other></rpid:place-type>" in text
    # Unknown activity names never reach the XML.
    odd = PresenceView(A.AVAILABLE, activities=("meeting", "<script>", "working"))
    assert "script" not in render_pidf(ENTITY, odd).decode()


views = st.builds(
    PresenceView,
    st.sampled_from([s for s in Availability if s is not A.APPEAR_OFFLINE]),
    note=st.none() | st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    activities=st.lists(st.sampled_from(sorted(ACTIVITY_STATES)), max_size=4, unique=True).map(
        tuple
    ),
    place=st.none() | st.sampled_from(["home", "office", "Room 4"]),
)


@given(views)
def test_render_then_parse_keeps_the_state(view: PresenceView) -> None:
    parsed = parse(render_pidf(ENTITY, view))
    assert parsed.availability is view.availability
    if view.availability is A.OFFLINE:
        assert parsed == DeviceState(A.OFFLINE)
        return
    assert parsed.place == view.place
    assert set(view.activities) <= set(parsed.activities)
    # XML normalises CR and cannot carry some characters (rendered as U+FFFD).
    if view.note is not None and _xml_safe(view.note) and "\r" not in view.note:
        assert parsed.note == (view.note.strip()[:MAX_NOTE_LENGTH] or None)


def _xml_safe(text: str) -> bool:
    return re.search("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", text) is None
