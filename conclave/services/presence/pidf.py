"""PIDF bodies: safe parsing of publications and deterministic rendering for NOTIFY.

Formats: PIDF (RFC 3863), RPID (RFC 4480) and the presence data model
(RFC 4479: ``dm:person``, ``dm:device``, service tuples).

Parsing is hostile-input parsing. The body comes from any signed-in user and
is read with :mod:`xml.parsers.expat` directly, configured so that:

* a document type declaration (``<!DOCTYPE``) of any kind is refused, so no
  entity is ever declared, expanded or fetched (no "billion laughs", no
  ``file:///etc/passwd``);
* size, nesting depth and element count are checked *while* parsing, against
  :data:`MAX_PIDF_SIZE`, :data:`MAX_XML_DEPTH` and :data:`MAX_XML_ELEMENTS`;
* only UTF-8 is accepted (RFC 3863 §4.1: UTF-8 is the one encoding every
  PIDF reader must support, and allowing others only adds attack surface).

Every problem raises :class:`PidfError` (a ValueError) with a one-line
``reason``, which the PUBLISH handler sends back with 400. Nothing else
escapes :func:`parse_pidf` for any ``body``; a fuzz test checks this.

The PIDF/RPID -> state mapping is documented in ``docs/presence.md`` and
implemented by :func:`parse_pidf` with the tables of
:mod:`conclave.services.presence.model`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.parsers import expat

from conclave.services.presence.model import (
    ACTIVITY_STATES,
    OFFLINE_VIEW,
    Availability,
    DeviceState,
    PresenceView,
    canonical_aor,
    state_from_activities,
)

PIDF_CONTENT_TYPE = "application/pidf+xml"
PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
LT_NS = "urn:ietf:params:xml:ns:location-type"
"""RFC 4589 location types, used inside ``rpid:place-type``."""

MAX_PIDF_SIZE = 32 * 1024
"""Largest PIDF body accepted, in octets. Real publications (baresip,
Linphone, Jitsi) are well under 2 KiB even with several tuples and a long
note; 32 KiB leaves room for rich documents and still caps the work one
PUBLISH can cause (and the copy kept per device)."""

MAX_XML_DEPTH = 16
"""Deepest element nesting accepted. The deepest standard path a client uses
is presence/tuple/status/geopriv/location-info/civicAddress/element, 7 levels;
16 tolerates extensions while stopping stack-exhaustion nesting."""

MAX_XML_ELEMENTS = 512
"""Most elements in one document. A generous publication has a few dozen;
the limit bounds the tree built in memory to a small fixed size."""

MAX_NOTE_LENGTH = 500
"""Longest note kept, in characters (longer notes are cut, not refused: a
client should not lose its whole state over a long message). A few
sentences; it bounds the copy kept per device and sent in every NOTIFY."""

MAX_ACTIVITIES = 16
"""Most RPID activities kept from one publication (RFC 4480 defines 26)."""

MAX_TOKEN_LENGTH = 128
"""Longest device identifier or place kept, in characters (a ``urn:uuid:``
device ID is 45)."""


class PidfError(ValueError):
    """The body is not an acceptable PIDF document. Answer 400 with :attr:`reason`."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- a minimal, bounded element tree ----------------------------------------------


@dataclass(slots=True)
class _Element:
    ns: str
    name: str
    attrs: dict[str, str]
    children: list[_Element] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.chunks).strip()

    def find(self, ns: str, name: str) -> list[_Element]:
        return [c for c in self.children if c.ns == ns and c.name == name]


def _split_name(name: str) -> tuple[str, str]:
    # expat reports "namespace-uri local-name" with namespace_separator=" ".
    ns, _, local = name.rpartition(" ")
    return ns, local


class _TreeBuilder:
    """expat handlers that build :class:`_Element` trees within the limits."""

    def __init__(self) -> None:
        self.root: _Element | None = None
        self._stack: list[_Element] = []
        self._count = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self._count += 1
        if self._count > MAX_XML_ELEMENTS:
            raise PidfError(f"too many XML elements (limit {MAX_XML_ELEMENTS})")
        if len(self._stack) >= MAX_XML_DEPTH:
            raise PidfError(f"XML nested too deeply (limit {MAX_XML_DEPTH})")
        ns, local = _split_name(name)
        element = _Element(ns, local, {_split_name(k)[1]: v for k, v in attrs.items()})
        if self._stack:
            self._stack[-1].children.append(element)
        else:
            self.root = element
        self._stack.append(element)

    def end(self, _name: str) -> None:
        self._stack.pop()

    def data(self, text: str) -> None:
        if self._stack:
            self._stack[-1].chunks.append(text)


def _refuse_dtd(*_args: object) -> None:
    raise PidfError("document type declarations are not allowed")


def _refuse_entity(*_args: object) -> int:
    raise PidfError("entity declarations and external entities are not allowed")


_XML_DECL_ENCODING = re.compile(
    rb"\A(?:\xef\xbb\xbf)?<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([^\"']*)"
)


def _parse_document(body: bytes) -> _Element:
    """Parse ``body`` into a bounded tree, or raise :class:`PidfError`."""
    if len(body) > MAX_PIDF_SIZE:
        raise PidfError(f"body larger than {MAX_PIDF_SIZE} octets")
    if not body.strip():
        raise PidfError("empty body")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise PidfError("body is not UTF-8") from None
    declared = _XML_DECL_ENCODING.match(body)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise PidfError("only the UTF-8 encoding is accepted")
    builder = _TreeBuilder()
    # encoding="UTF-8" overrides whatever the document declares.
    parser = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.NotationDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_entity
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise PidfError(f"malformed XML: {expat.ErrorString(exc.code)}") from None
    except RecursionError:  # pragma: no cover - the depth limit comes first
        raise PidfError("XML nested too deeply") from None
    if builder.root is None:  # pragma: no cover - expat reports "no element found"
        raise PidfError("no XML element")
    return builder.root


# --- reading a publication ---------------------------------------------------------


def _check_entity(document_entity: str | None, publisher: str) -> None:
    if not document_entity:
        raise PidfError("the presence element has no entity attribute")
    try:
        entity = canonical_aor(document_entity)
    except ValueError:
        raise PidfError("the entity attribute is not a SIP or pres URI") from None
    if entity != publisher:
        raise PidfError("the entity attribute does not match the publisher's address")


def _activity_elements(persons: list[_Element], tuples: list[_Element]) -> list[_Element]:
    # RFC 4480 puts activities in dm:person; pre-RFC 4479 clients put them in
    # the tuple's status. Accept both.
    found = [a for p in persons for a in p.find(RPID_NS, "activities")]
    for t in tuples:
        for status in t.find(PIDF_NS, "status"):
            found.extend(status.find(RPID_NS, "activities"))
    return found


def _activities(elements: list[_Element]) -> tuple[list[str], list[Availability]]:
    """Recognised RFC 4480 activities, and explicit states from ``<rpid:other>``."""
    activities: list[str] = []
    explicit: list[Availability] = []
    for container in elements:
        for child in container.children:
            if child.ns != RPID_NS:
                continue
            if child.name == "other":
                state = Availability.from_token(child.text)
                if state is not None:
                    explicit.append(state)
            elif child.name in ACTIVITY_STATES and child.name not in activities:
                activities.append(child.name)
    return activities[:MAX_ACTIVITIES], explicit


def _basic_values(tuples: list[_Element]) -> list[str]:
    return [
        basic.text.lower()
        for t in tuples
        for status in t.find(PIDF_NS, "status")
        for basic in status.find(PIDF_NS, "basic")
    ]


def _availability(
    tuples: list[_Element], activities: list[str], explicit: list[Availability]
) -> Availability:
    if explicit:
        # Several explicit states: the least available one (conservative).
        return max(explicit)
    is_open = "open" in _basic_values(tuples)
    if tuples and not is_open:
        # RFC 3863 §4.1.4: no service is open, the device cannot communicate.
        # Any basic value other than "open" counts as closed.
        return Availability.OFFLINE
    implied = state_from_activities(activities)
    if implied is not None:
        return implied
    return Availability.AVAILABLE if is_open else Availability.OFFLINE


def _first_text(elements: Sequence[_Element], limit: int) -> str | None:
    for element in elements:
        text = element.text
        if text:
            return text[:limit]
    return None


def _note(root: _Element, persons: list[_Element], tuples: list[_Element]) -> str | None:
    candidates = [n for p in persons for n in p.find(DM_NS, "note")]
    candidates += root.find(PIDF_NS, "note")
    candidates += [n for t in tuples for n in t.find(PIDF_NS, "note")]
    return _first_text(candidates, MAX_NOTE_LENGTH)


def _device_id(root: _Element, tuples: list[_Element]) -> str | None:
    candidates = [i for d in root.find(DM_NS, "device") for i in d.find(DM_NS, "deviceID")]
    candidates += [i for t in tuples for i in t.find(DM_NS, "deviceID")]
    return _first_text(candidates, MAX_TOKEN_LENGTH)


def _place(persons: list[_Element]) -> str | None:
    for person in persons:
        for place_type in person.find(RPID_NS, "place-type"):
            for child in place_type.children:
                text = child.text if (child.ns, child.name) == (RPID_NS, "other") else child.name
                if text:
                    return text[:MAX_TOKEN_LENGTH]
    return None


def parse_pidf(body: bytes, *, entity: str) -> DeviceState:
    """Read one device's publication (the body of a PUBLISH, Event: presence).

    ``entity`` is the publisher's address of record (``sip:alice@example.test``);
    the document's ``entity`` attribute (``sip:``, ``sips:`` or ``pres:``) must
    name the same AOR. Returns a :class:`DeviceState` with ``published=0``: set
    the publication order before aggregating. Raises :class:`PidfError` (answer
    400 with its ``reason``) for anything unacceptable, and nothing else;
    ValueError only if ``entity`` itself is not an AOR (a caller bug).
    """
    publisher = canonical_aor(entity)
    root = _parse_document(body)
    if (root.ns, root.name) != (PIDF_NS, "presence"):
        raise PidfError("not a PIDF document: the root must be <presence> in " + PIDF_NS)
    _check_entity(root.attrs.get("entity"), publisher)
    tuples = root.find(PIDF_NS, "tuple")
    persons = root.find(DM_NS, "person")
    activities, explicit = _activities(_activity_elements(persons, tuples))
    return DeviceState(
        availability=_availability(tuples, activities, explicit),
        note=_note(root, persons, tuples),
        activities=tuple(activities),
        device=_device_id(root, tuples),
        place=_place(persons),
    )


# --- rendering a view ----------------------------------------------------------------

_INVALID_XML_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """``text`` escaped for XML character data; characters XML cannot carry become U+FFFD."""
    text = _INVALID_XML_CHARS.sub("\ufffd", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xml_attr(text: str) -> str:
    """``text`` escaped for a double-quoted XML attribute value (whitespace preserved)."""
    escaped = xml_text(text).replace('"', "&quot;")
    return escaped.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")


XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'

_IMPLIED_ACTIVITIES: dict[Availability, tuple[str, ...]] = {
    Availability.AVAILABLE: (),
    Availability.IN_A_CALL: ("on-the-phone",),
    Availability.BUSY: ("busy",),
    Availability.DO_NOT_DISTURB: ("busy",),
    Availability.BE_RIGHT_BACK: ("away",),
    Availability.AWAY: ("away",),
    Availability.OFF_WORK: ("away",),
}
"""The standard RPID activity that tells any client roughly what each state means.

States RPID cannot express exactly (DND, BRB, Off Work) also get their
explicit ``<rpid:other>`` token, added by :func:`_rendered_activities`."""

_PLACE_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}\Z")


def _rendered_activities(view: PresenceView) -> tuple[list[str], str | None]:
    names = list(_IMPLIED_ACTIVITIES[view.availability])
    names += [a for a in view.activities if a in ACTIVITY_STATES and a not in names]
    # Add the explicit token only when the standard elements alone would be
    # read as a different state, so parse(render(view)) has view's state.
    standard = state_from_activities(names) or Availability.AVAILABLE
    explicit = view.availability.token if standard is not view.availability else None
    return names, explicit


def _person_lines(view: PresenceView) -> list[str]:
    lines: list[str] = []
    names, explicit = _rendered_activities(view)
    if names or explicit:
        lines.append("    <rpid:activities>")
        lines += [f"      <rpid:{name}/>" for name in names]
        if explicit:
            lines.append(f"      <rpid:other>{explicit}</rpid:other>")
        lines.append("    </rpid:activities>")
    if view.place:
        if _PLACE_TOKEN.match(view.place):
            place = f'<lt:{view.place} xmlns:lt="{LT_NS}"/>'
        else:
            place = f"<rpid:other>{xml_text(view.place)}</rpid:other>"
        lines.append(f"    <rpid:place-type>{place}</rpid:place-type>")
    if view.note:
        lines.append(f"    <dm:note>{xml_text(view.note)}</dm:note>")
    if not lines:
        return []
    return ['  <dm:person id="p1">', *lines, "  </dm:person>"]


def render_pidf(entity: str, view: PresenceView) -> bytes:
    """The full-state PIDF body for ``view`` (a NOTIFY body, ``application/pidf+xml``).

    Deterministic: equal arguments give identical bytes (no timestamps, no
    random ids), so a blocked watcher's body is byte-identical to a real
    offline user's. An offline or Appear Offline view renders as
    :data:`~conclave.services.presence.model.OFFLINE_VIEW`: one closed tuple
    and nothing else. Pass the view through ``filter_view`` first.
    """
    if view.availability in (Availability.OFFLINE, Availability.APPEAR_OFFLINE):
        view = OFFLINE_VIEW
    basic = "closed" if view.availability is Availability.OFFLINE else "open"
    lines = [
        XML_DECLARATION,
        f'<presence xmlns="{PIDF_NS}" xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}"'
        f' entity="{xml_attr(entity)}">',
        '  <tuple id="t1">',
        f"    <status><basic>{basic}</basic></status>",
        "  </tuple>",
    ]
    if view.availability is not Availability.OFFLINE:
        lines += _person_lines(view)
    lines.append("</presence>")
    return ("\n".join(lines) + "\n").encode("utf-8")
