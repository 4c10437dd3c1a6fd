"""The presence model: aggregation across devices, In a call, and the privacy matrix."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conclave.services.presence.model import (
    AVAILABILITY_TOKENS,
    OFFLINE_VIEW,
    VIEW_ITEMS,
    VISIBLE_ITEMS,
    Availability,
    DeviceState,
    PresenceView,
    Relationship,
    aggregate,
    canonical_aor,
    default_relationship,
    domain_of,
    filter_view,
    resolve_relationship,
)
from conclave.services.presence.pidf import render_pidf
from conclave.store.contacts import PRIVACY_LEVELS, normalize_aor

A = Availability
AVAILABLE, IN_A_CALL, BUSY, DND = A.AVAILABLE, A.IN_A_CALL, A.BUSY, A.DO_NOT_DISTURB
BRB, AWAY, OFF_WORK, HIDDEN, OFFLINE = (
    A.BE_RIGHT_BACK,
    A.AWAY,
    A.OFF_WORK,
    A.APPEAR_OFFLINE,
    A.OFFLINE,
)
ENTITY = "sip:alice@example.test"


def dev(
    state: Availability, note: str | None = None, published: int = 0, **kw: object
) -> DeviceState:
    return DeviceState(state, note=note, published=published, **kw)  # type: ignore[arg-type]


def test_documented_order() -> None:
    assert list(Availability) == [
        AVAILABLE,
        IN_A_CALL,
        BUSY,
        DND,
        BRB,
        AWAY,
        OFF_WORK,
        HIDDEN,
        OFFLINE,
    ]
    assert sorted(Availability) == list(Availability)  # lower value = more available


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("available", AVAILABLE),
        ("Do Not Disturb", DND),
        ("do_not_disturb", DND),
        ("DND", DND),
        ("brb", BRB),
        (" be-right-back ", BRB),
        ("off work", OFF_WORK),
        ("Appear Offline", HIDDEN),
        ("in-a-call", IN_A_CALL),
        ("lunch", None),
        ("", None),
    ],
)
def test_tokens(text: str, state: Availability | None) -> None:
    assert Availability.from_token(text) is state
    for member in Availability:
        assert Availability.from_token(member.token) is member
    assert set(AVAILABILITY_TOKENS) == set(Availability)


# --- aggregation ----------------------------------------------------------------------

AGGREGATION = [
    # (devices, in_call, expected availability)
    ([], False, OFFLINE),
    ([], True, OFFLINE),
    ([dev(AVAILABLE)], False, AVAILABLE),
    ([dev(AWAY), dev(AVAILABLE)], False, AVAILABLE),  # most available wins
    ([dev(AVAILABLE), dev(AWAY)], False, AVAILABLE),  # whatever the order
    ([dev(BUSY), dev(AWAY)], False, BUSY),
    ([dev(BRB), dev(OFF_WORK)], False, BRB),
    ([dev(OFFLINE), dev(AWAY)], False, AWAY),  # a closed device does not hide others
    ([dev(OFFLINE), dev(OFFLINE)], False, OFFLINE),
    ([dev(DND), dev(AVAILABLE)], False, DND),  # DND overrides
    ([dev(AVAILABLE), dev(DND), dev(BUSY)], False, DND),
    ([dev(HIDDEN), dev(AVAILABLE)], False, OFFLINE),  # Appear Offline hides everything
    ([dev(DND), dev(HIDDEN)], False, OFFLINE),
    ([dev(HIDDEN)], True, OFFLINE),
    # In a call: raises Available, BRB and Away only.
    ([dev(AVAILABLE)], True, IN_A_CALL),
    ([dev(BRB)], True, IN_A_CALL),
    ([dev(AWAY)], True, IN_A_CALL),
    ([dev(BUSY)], True, BUSY),
    ([dev(DND)], True, DND),
    ([dev(OFF_WORK)], True, OFF_WORK),
    ([dev(OFFLINE)], True, OFFLINE),
    # A device that publishes on-the-phone puts the whole user in a call.
    ([dev(IN_A_CALL), dev(AVAILABLE)], False, IN_A_CALL),
    ([dev(IN_A_CALL), dev(AWAY)], False, IN_A_CALL),
    ([dev(IN_A_CALL), dev(BUSY)], False, IN_A_CALL),  # most available of the two
    ([dev(IN_A_CALL), dev(DND)], False, DND),
]


@pytest.mark.parametrize(("devices", "in_call", "expected"), AGGREGATION)
def test_aggregation_table(devices: list[DeviceState], in_call: bool, expected: A) -> None:
    view = aggregate(devices, in_call=in_call)
    assert view.availability is expected
    assert view.availability is not HIDDEN
    if expected is OFFLINE:
        assert view == OFFLINE_VIEW


def test_note_comes_from_most_recent_device_with_one() -> None:
    devices = [
        dev(AVAILABLE, "old note", published=1),
        dev(AWAY, "newest note", published=3),
        dev(BUSY, None, published=5),
    ]
    assert aggregate(devices).note == "newest note"
    # Without stamps, position decides: later entries are more recent.
    assert aggregate([dev(AWAY, "first"), dev(AVAILABLE, "second")]).note == "second"
    assert aggregate([dev(AWAY, "first", 2), dev(AVAILABLE, "second", 1)]).note == "first"
    # Even an offline device's note counts while another device is online.
    assert aggregate([dev(AVAILABLE, published=1), dev(OFFLINE, "on leave", 2)]).note == (
        "on leave"
    )
    # ...but an offline user shows no note at all.
    assert aggregate([dev(OFFLINE, "gone")]) == OFFLINE_VIEW
    assert aggregate([dev(HIDDEN, "secret"), dev(AVAILABLE, "x")]) == OFFLINE_VIEW


def test_activities_and_place() -> None:
    phone = dev(BUSY, published=1, activities=("meeting", "working"), place="office")
    laptop = dev(BUSY, published=2, activities=("appointment",))
    view = aggregate([phone, laptop, dev(AWAY, published=3, place="home")])
    # Activities from the most recent device with the winning state; place from the most recent.
    assert view == PresenceView(BUSY, activities=("appointment",), place="home")
    # In a call drops activities that contradict the shown state.
    view = aggregate([dev(AWAY, activities=("away", "working"))], in_call=True)
    assert view == PresenceView(IN_A_CALL, activities=("working",))


@given(
    st.lists(
        st.builds(
            DeviceState,
            st.sampled_from(list(Availability)),
            note=st.none() | st.text(max_size=5),
            published=st.integers(0, 5),
        ),
        max_size=5,
    ),
    st.booleans(),
)
def test_aggregate_properties(devices: list[DeviceState], in_call: bool) -> None:
    view = aggregate(devices, in_call=in_call)
    states = {d.availability for d in devices}
    assert view.availability is not HIDDEN
    assert aggregate(list(reversed(devices)), in_call=in_call).availability is view.availability
    if HIDDEN in states or not states or states == {OFFLINE}:
        assert view == OFFLINE_VIEW
    elif DND in states:
        assert view.availability is DND
    elif not in_call and IN_A_CALL not in states:
        assert view.availability is min(states)


# --- privacy --------------------------------------------------------------------------

FULL = PresenceView(BUSY, note="Writing the Q3 report", activities=("meeting",), place="office")

# (level, availability, activities, note, place): what each level sees of FULL.
MATRIX = [
    (Relationship.BLOCKED, OFFLINE, (), None, None),
    (Relationship.EXTERNAL, BUSY, (), None, None),
    (Relationship.COLLEAGUES, BUSY, ("meeting",), None, None),
    (Relationship.WORKGROUP, BUSY, ("meeting",), "Writing the Q3 report", None),
    (Relationship.FRIENDS_FAMILY, BUSY, ("meeting",), "Writing the Q3 report", "office"),
]


@pytest.mark.parametrize(("level", "availability", "activities", "note", "place"), MATRIX)
def test_privacy_matrix(
    level: Relationship,
    availability: A,
    activities: tuple[str, ...],
    note: str | None,
    place: str | None,
) -> None:
    seen = filter_view(FULL, level)
    assert seen == PresenceView(availability, note=note, activities=activities, place=place)
    expected_items = {item for item in VIEW_ITEMS if getattr(seen, item) == getattr(FULL, item)}
    assert VISIBLE_ITEMS[level] == (expected_items if level is not Relationship.BLOCKED else set())


def test_levels_are_nested() -> None:
    levels = list(Relationship)
    for lower, higher in itertools.pairwise(levels):
        assert VISIBLE_ITEMS[lower] < VISIBLE_ITEMS[higher]


views = st.builds(
    PresenceView,
    st.sampled_from(list(Availability)),
    note=st.none() | st.text(max_size=20),
    activities=st.lists(st.sampled_from(["meeting", "busy", "away", "working"]), max_size=3).map(
        tuple
    ),
    place=st.none() | st.sampled_from(["home", "office", "my desk"]),
)


@given(views)
def test_blocked_is_indistinguishable_from_offline(view: PresenceView) -> None:
    blocked = filter_view(view, Relationship.BLOCKED)
    for level in Relationship:
        really_offline = filter_view(aggregate([]), level)
        assert blocked == really_offline == OFFLINE_VIEW
        assert render_pidf(ENTITY, blocked) == render_pidf(ENTITY, really_offline)


@given(views, st.sampled_from(list(Relationship)))
def test_filtering_never_adds_and_hides_appear_offline(
    view: PresenceView, level: Relationship
) -> None:
    seen = filter_view(view, level)
    assert seen.availability is not HIDDEN
    assert filter_view(seen, level) == seen
    if view.availability in (OFFLINE, HIDDEN):
        assert seen == OFFLINE_VIEW
    for item in ("note", "place"):
        assert getattr(seen, item) in (None, getattr(view, item))


# --- relationships --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("blocked", Relationship.BLOCKED),
        ("External", Relationship.EXTERNAL),
        ("colleagues", Relationship.COLLEAGUES),
        ("WORKGROUP", Relationship.WORKGROUP),
        ("friends", Relationship.FRIENDS_FAMILY),
        ("friends-family", Relationship.FRIENDS_FAMILY),
        ("Friends and Family", Relationship.FRIENDS_FAMILY),
        ("friends_family", Relationship.FRIENDS_FAMILY),
    ],
)
def test_relationship_spellings(text: str, level: Relationship) -> None:
    assert Relationship(text) is level


def test_relationship_values_match_the_store() -> None:
    assert tuple(r.value for r in Relationship) == PRIVACY_LEVELS
    with pytest.raises(ValueError):
        Relationship("besties")


@pytest.mark.parametrize(
    ("watcher", "level"),
    [
        ("sip:bob@example.test", Relationship.COLLEAGUES),
        ("sips:bob@EXAMPLE.TEST", Relationship.COLLEAGUES),
        ("bob@example.test", Relationship.COLLEAGUES),
        ("sip:carol@partner.example", Relationship.EXTERNAL),
        ("sip:eve@sub.example.test", Relationship.EXTERNAL),
        ("not an address", Relationship.EXTERNAL),
        ("tel:+441234", Relationship.EXTERNAL),
    ],
)
def test_default_relationship(watcher: str, level: Relationship) -> None:
    assert default_relationship(watcher, "Example.Test") is level


def test_resolve_relationship_precedence() -> None:
    rules = {
        "partner.example": "friends",
        "sip:carol@partner.example": "blocked",
        "sip:bob@example.test": "workgroup",
        "example.test": "external",
    }
    resolve = resolve_relationship
    assert resolve("sip:carol@partner.example", "example.test", rules) is Relationship.BLOCKED
    assert resolve("sip:dan@Partner.Example", "example.test", rules) is (
        Relationship.FRIENDS_FAMILY
    )
    assert resolve("sip:bob@example.test", "example.test", rules) is Relationship.WORKGROUP
    assert resolve("sip:dave@example.test", "example.test", rules) is Relationship.EXTERNAL
    assert resolve("sip:dave@example.test", "example.test", {}) is Relationship.COLLEAGUES
    assert resolve("sip:x@sub.partner.example", "example.test", rules) is (Relationship.EXTERNAL)
    assert resolve("garbage", "example.test", rules) is Relationship.EXTERNAL


@pytest.mark.parametrize(
    "text",
    [
        "sip:bob@example.test",
        "sips:bob@Example.Test",
        "bob@example.test",
        "first.last+x@partner.example",
        "sip:bob@example.test.",
    ],
)
def test_canonical_aor_matches_the_store(text: str) -> None:
    assert canonical_aor(text) == normalize_aor(text)


def test_canonical_aor_forms() -> None:
    assert canonical_aor("pres:bob@example.test") == "sip:bob@example.test"
    assert canonical_aor("<sip:bob@example.test;transport=tls>") == "sip:bob@example.test"
    assert domain_of("sip:bob@EXAMPLE.test") == "example.test"
    for bad in ["tel:+441234", "sip:example.test", "http://x", "", "bob"]:
        with pytest.raises(ValueError):
            canonical_aor(bad)
