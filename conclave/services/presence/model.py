"""The presence model: states, device aggregation and the privacy matrix.

Theory of operation
-------------------
Each PUBLISH (RFC 3903) from one of a user's devices becomes a
:class:`DeviceState` (see :func:`conclave.services.presence.pidf.parse_pidf`).
:func:`aggregate` folds all of a user's live publications, plus the
server-side fact "in a call through Conclave", into one :class:`PresenceView`.
For each watcher, :func:`filter_view` then cuts that view down to what the
watcher's :class:`Relationship` may see, and ``render_pidf`` turns the result
into the NOTIFY body. Everything here is pure and synchronous: no clock, no
I/O, so it can run on the notify path and be tested as tables.

The rules are documented in ``docs/presence.md``; the tables in this module
(:data:`VISIBLE_ITEMS`, :data:`AVAILABILITY_TOKENS`) are the source of truth
and the tests check every cell.

Blocked must look exactly like Offline: every offline outcome (no devices,
all devices closed, Appear Offline, Blocked) is the single value
:data:`OFFLINE_VIEW`, with no note, activities or place, so the rendered
bodies are byte-identical.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from conclave.sip.address import aor_of
from conclave.sip.errors import SipError
from conclave.sip.uri import parse_uri


class Availability(enum.IntEnum):
    """A user's aggregated state, Lync style. Lower value = more available.

    The order is what "the most available device wins" compares.
    """

    AVAILABLE = 1
    IN_A_CALL = 2
    """Lync "In a call": busy because of an established call."""
    BUSY = 3
    DO_NOT_DISTURB = 4
    BE_RIGHT_BACK = 5
    AWAY = 6
    OFF_WORK = 7
    APPEAR_OFFLINE = 8
    """Chosen by the user: watchers see exactly :attr:`OFFLINE`."""
    OFFLINE = 9

    @property
    def token(self) -> str:
        """The spelling used in ``<rpid:other>``, the docs and logs: ``"do-not-disturb"``."""
        return AVAILABILITY_TOKENS[self]

    @classmethod
    def from_token(cls, text: str) -> Availability | None:
        """The state named by ``text`` (case, spaces and ``_`` tolerated), or None."""
        key = "-".join(text.strip().lower().replace("_", " ").split())
        return _TOKEN_LOOKUP.get(key)


AVAILABILITY_TOKENS: dict[Availability, str] = {
    Availability.AVAILABLE: "available",
    Availability.IN_A_CALL: "in-a-call",
    Availability.BUSY: "busy",
    Availability.DO_NOT_DISTURB: "do-not-disturb",
    Availability.BE_RIGHT_BACK: "be-right-back",
    Availability.AWAY: "away",
    Availability.OFF_WORK: "off-work",
    Availability.APPEAR_OFFLINE: "appear-offline",
    Availability.OFFLINE: "offline",
}
"""Explicit state names a client may publish as ``<rpid:other>NAME</rpid:other>``."""

_TOKEN_LOOKUP: dict[str, Availability] = {
    **{token: state for state, token in AVAILABILITY_TOKENS.items()},
    "dnd": Availability.DO_NOT_DISTURB,
    "brb": Availability.BE_RIGHT_BACK,
    "on-a-call": Availability.IN_A_CALL,
    "invisible": Availability.APPEAR_OFFLINE,
}

IN_CALL_RAISES = frozenset({Availability.AVAILABLE, Availability.BE_RIGHT_BACK, Availability.AWAY})
"""States that an established call turns into :attr:`Availability.IN_A_CALL`.

Busy and Do Not Disturb already say "do not expect an answer" (and DND is a
stronger request), Off Work is the user's explicit choice, Appear Offline must
hide everything, and a user with no live publication is not revealed by the
calls they make."""


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One publication: one device, one PUBLISH entity-tag (RFC 3903).

    :func:`~conclave.services.presence.pidf.parse_pidf` fills every field but
    ``published``; the service sets ``published`` (with ``dataclasses.replace``)
    before handing the state to :func:`aggregate`.
    """

    availability: Availability
    note: str | None = None
    """Free text (RPID/PIDF note), already trimmed and bounded; None when absent."""
    activities: tuple[str, ...] = ()
    """Recognised RFC 4480 activity names, e.g. ``("meeting",)``, in document order."""
    device: str | None = None
    """The RFC 4479 device identifier, if the document gave one (informational)."""
    place: str | None = None
    """RFC 4480 place-type, e.g. ``"office"`` or ``"home"`` (RFC 4589 tokens)."""
    published: int = 0
    """Publication order: larger means published (or refreshed with a body) later.

    Any monotonic counter works (a per-user sequence number, or a monotonic
    clock reading in nanoseconds). Equal values fall back to the order of the
    sequence given to :func:`aggregate` (later entries are more recent)."""


@dataclass(frozen=True, slots=True)
class PresenceView:
    """What a watcher may see of a user, after aggregation and privacy filtering.

    ``availability`` is never :attr:`Availability.APPEAR_OFFLINE` in a view
    made by :func:`aggregate` or :func:`filter_view`.
    """

    availability: Availability
    note: str | None = None
    activities: tuple[str, ...] = ()
    place: str | None = None

    @property
    def offline(self) -> bool:
        """True for the offline view (the only thing a blocked watcher ever sees)."""
        return self == OFFLINE_VIEW


OFFLINE_VIEW = PresenceView(Availability.OFFLINE)
"""The one and only offline view: no note, no activities, no place."""


ACTIVITY_STATES: dict[str, Availability | None] = {
    # RFC 4480 §3.2 activities; None = says nothing about availability.
    "on-the-phone": Availability.IN_A_CALL,
    "busy": Availability.BUSY,
    "meeting": Availability.BUSY,
    "appointment": Availability.BUSY,
    "presentation": Availability.BUSY,
    "performance": Availability.BUSY,
    "steering": Availability.BUSY,
    "meal": Availability.BE_RIGHT_BACK,
    "breakfast": Availability.BE_RIGHT_BACK,
    "dinner": Availability.BE_RIGHT_BACK,
    "away": Availability.AWAY,
    "in-transit": Availability.AWAY,
    "travel": Availability.AWAY,
    "shopping": Availability.AWAY,
    "looking-for-work": Availability.AWAY,
    "spectator": Availability.AWAY,
    "playing": Availability.AWAY,
    "tv": Availability.AWAY,
    "worship": Availability.AWAY,
    "vacation": Availability.OFF_WORK,
    "holiday": Availability.OFF_WORK,
    "sleeping": Availability.OFF_WORK,
    "permanent-absence": Availability.OFF_WORK,
    "working": None,
    "unknown": None,
}
"""Every RFC 4480 activity (except ``other``) and the state it implies."""


def state_from_activities(activities: Sequence[str]) -> Availability | None:
    """The state implied by RPID activities: the *least* available one, or None.

    Conservative on purpose: "meeting" plus "on-the-phone" shows Busy, never a
    state more reachable than any activity the client stated.
    """
    states = [s for a in activities if (s := ACTIVITY_STATES.get(a)) is not None]
    return max(states) if states else None


def _consistent_activities(
    activities: tuple[str, ...], availability: Availability
) -> tuple[str, ...]:
    # Keep activities that agree with the shown state (or say nothing about
    # it), so a rendered body never contradicts its own availability.
    return tuple(a for a in activities if ACTIVITY_STATES.get(a) in (None, availability))


def _most_recent(devices: Sequence[DeviceState]) -> list[DeviceState]:
    """``devices`` ordered most recent first (``published``, then position)."""
    order = sorted(range(len(devices)), key=lambda i: (devices[i].published, i), reverse=True)
    return [devices[i] for i in order]


def aggregate(devices: Sequence[DeviceState], *, in_call: bool = False) -> PresenceView:
    """Combine a user's live publications into one view (the Lync-like rule).

    1. No devices: :data:`OFFLINE_VIEW`.
    2. Appear Offline on any device: :data:`OFFLINE_VIEW` (nothing else shows).
    3. Do Not Disturb on any device: Do Not Disturb.
    4. Otherwise the most available device wins; if that is Offline (every
       device closed), :data:`OFFLINE_VIEW`.
    5. ``in_call`` (a call through Conclave), or any device publishing In a
       call (``on-the-phone``), turns Available, Be Right Back and Away into
       In a call: a call on one device makes the whole user busy.

    Activities come from the most recent device with the winning state (only
    those consistent with the final state); note and place each come from the
    most recent device that has one. Call this again after every change and
    pass the result to :func:`filter_view` for each watcher.
    """
    if not devices:
        return OFFLINE_VIEW
    states = {d.availability for d in devices}
    if Availability.APPEAR_OFFLINE in states:
        return OFFLINE_VIEW
    chosen = Availability.DO_NOT_DISTURB if Availability.DO_NOT_DISTURB in states else min(states)
    if chosen is Availability.OFFLINE:
        return OFFLINE_VIEW
    in_call = in_call or Availability.IN_A_CALL in states
    recent = _most_recent(devices)
    winner = next(d for d in recent if d.availability is chosen)
    shown = Availability.IN_A_CALL if in_call and chosen in IN_CALL_RAISES else chosen
    return PresenceView(
        availability=shown,
        note=next((d.note for d in recent if d.note), None),
        activities=_consistent_activities(winner.activities, shown),
        place=next((d.place for d in recent if d.place), None),
    )


class Relationship(enum.StrEnum):
    """A privacy relationship, set by the user per contact or per domain.

    Values are the CLI spellings; ``Relationship("friends-family")`` (and a
    few other spellings) also work.
    """

    BLOCKED = "blocked"
    EXTERNAL = "external"
    COLLEAGUES = "colleagues"
    WORKGROUP = "workgroup"
    FRIENDS_FAMILY = "friends"

    @classmethod
    def _missing_(cls, value: object) -> Relationship | None:
        if not isinstance(value, str):
            return None
        key = "-".join(value.strip().lower().replace("_", " ").replace("&", " and ").split())
        key = _RELATIONSHIP_ALIASES.get(key, key)
        for member in cls:
            if member.value == key:
                return member
        return None


_RELATIONSHIP_ALIASES = {
    "friends-family": "friends",
    "friends-and-family": "friends",
    "block": "blocked",
    "colleague": "colleagues",
}

VIEW_ITEMS = ("availability", "activities", "note", "place")
"""The data items of a :class:`PresenceView`, in the order the docs list them."""

VISIBLE_ITEMS: dict[Relationship, frozenset[str]] = {
    Relationship.BLOCKED: frozenset(),
    Relationship.EXTERNAL: frozenset({"availability"}),
    Relationship.COLLEAGUES: frozenset({"availability", "activities"}),
    Relationship.WORKGROUP: frozenset({"availability", "activities", "note"}),
    Relationship.FRIENDS_FAMILY: frozenset({"availability", "activities", "note", "place"}),
}
"""The privacy matrix: which items each level sees. BLOCKED sees the offline view."""


def filter_view(view: PresenceView, level: Relationship) -> PresenceView:
    """What a watcher at ``level`` may see of ``view`` (see :data:`VISIBLE_ITEMS`).

    BLOCKED, and any offline or Appear Offline input, give exactly
    :data:`OFFLINE_VIEW`, so the NOTIFY is the same as for a user who is
    really offline. Render the result with ``render_pidf``.
    """
    items = VISIBLE_ITEMS[level]
    if not items or view.availability in (Availability.OFFLINE, Availability.APPEAR_OFFLINE):
        return OFFLINE_VIEW
    return replace(
        view,
        note=view.note if "note" in items else None,
        activities=view.activities if "activities" in items else (),
        place=view.place if "place" in items else None,
    )


def canonical_aor(text: str) -> str:
    """``sip:user@domain`` for a SIP, SIPS, ``pres:`` or ``im:`` URI, or ``user@domain``.

    The form matches :func:`conclave.sip.address.aor_of` (domain lower
    case, parameters dropped). Raises ValueError for anything else.
    """
    text = text.strip()
    if text[:1] == "<" and text[-1:] == ">":
        text = text[1:-1]
    scheme, colon, rest = text.partition(":")
    if not colon or "@" in scheme:
        text = "sip:" + text
    elif scheme.lower() in ("pres", "im"):
        # RFC 3859/3860 URIs name the same presentity as its SIP AOR.
        text = "sip:" + rest
    try:
        return aor_of(parse_uri(text))
    except SipError as exc:
        raise ValueError(f"not an address of record: {text[:80]!r} ({exc})") from None


def domain_of(aor: str) -> str:
    """The lower-case domain of an address of record (ValueError if it is not one)."""
    return canonical_aor(aor).rpartition("@")[2]


def default_relationship(watcher_aor: str, owner_domain: str) -> Relationship:
    """COLLEAGUES for a watcher inside ``owner_domain``, EXTERNAL for anyone else.

    A watcher address that cannot be parsed counts as EXTERNAL.
    """
    try:
        domain = domain_of(watcher_aor)
    except ValueError:
        return Relationship.EXTERNAL
    if domain == owner_domain.strip().lower().rstrip("."):
        return Relationship.COLLEAGUES
    return Relationship.EXTERNAL


def resolve_relationship(
    watcher_aor: str, owner_domain: str, rules: Mapping[str, str]
) -> Relationship:
    """The level for one watcher, from one owner's privacy rules.

    ``rules`` maps targets to levels, as stored by ``PrivacyStore`` (keys are
    canonical AORs ``sip:bob@example.org`` or lower-case domains
    ``example.org``). A rule for the watcher's AOR beats a rule for its
    domain, which beats :func:`default_relationship`. Domains match exactly
    (a rule for ``example.org`` does not cover ``sub.example.org``). A
    watcher address that cannot be parsed is EXTERNAL.
    """
    try:
        aor = canonical_aor(watcher_aor)
    except ValueError:
        return Relationship.EXTERNAL
    level = rules.get(aor)
    if level is None:
        level = rules.get(aor.rpartition("@")[2])
    if level is None:
        return default_relationship(aor, owner_domain)
    return Relationship(level)
