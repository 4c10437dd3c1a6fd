"""Registrar (RFC 3261 §10.3): tables of REGISTER requests -> response and bindings."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from conclave.services.location import (
    Contact,
    LocationError,
    MemoryLocationService,
    RegisterChange,
)
from conclave.services.registrar import Registrar, format_q, http_date
from conclave.sip.address import parse_name_addr
from conclave.sip.fields import check_date
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.message import Request, Response
from conclave.sip.parser import parse_message
from conclave.sip.uri import parse_uri

DOMAIN = "example.test"
AOR = f"sip:alice@{DOMAIN}"
NOW = 1_772_366_400.0  # 2026-03-01 12:00:00 UTC
UDP = Flow("udp", ("192.0.2.10", 5060), ("198.51.100.1", 5060))
TLS = Flow("tls", ("192.0.2.20", 40000), ("198.51.100.1", 5061), conn_id=7)
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
C1 = "<sip:alice@192.0.2.10:5060>"
C2 = "<sip:alice@192.0.2.11:5060>"


def register(
    *contacts: str,
    user: str = "alice",
    to: str | None = None,
    call_id: str = "reg-1@client",
    cseq: int = 1,
    expires: int | str | None = None,
    extra: tuple[str, ...] = (),
    raw: bool = False,
) -> Request:
    """A REGISTER through the real parser, or with ``raw`` built directly.

    ``raw`` skips the parser's own checks, to show the registrar copes with
    values the parser would already have refused.
    """
    lines = [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-reg",
        "Max-Forwards: 70",
        f"To: <{to or f'sip:{user}@{DOMAIN}'}>",
        f"From: <sip:{user}@{DOMAIN}>;tag=from1",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *([] if expires is None else [f"Expires: {expires}"]),
        *extra,
    ]
    if raw:
        headers = Headers(tuple(line.split(": ", 1)) for line in lines)  # type: ignore[misc]
        return Request("REGISTER", parse_uri(f"sip:{DOMAIN}"), headers)
    text = "\r\n".join([f"REGISTER sip:{DOMAIN} SIP/2.0", *lines, "Content-Length: 0"])
    message = parse_message((text + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


class Harness:
    """A registrar over an in-memory location service, with a stepped clock."""

    def __init__(self, **config: int) -> None:
        self.location = MemoryLocationService()
        self.registrar = Registrar(self.location, domain=DOMAIN, **config)
        self.now = NOW

    def send(
        self, request: Request, *, user: str = "alice", flow: Flow = UDP, at: float | None = None
    ) -> Response:
        if at is not None:
            self.now = at
        return self.registrar.handle(request, user=user, flow=flow, now=self.now, to_tag="srv1")

    def uris(self, aor: str = AOR) -> list[str]:
        return [str(c.uri) for c in self.location.bindings(aor, self.now)]


def contacts(response: Response) -> dict[str, dict[str, str | None]]:
    """URI -> header parameters of each Contact in a response."""
    out: dict[str, dict[str, str | None]] = {}
    for value in response.headers.get_all("Contact"):
        na = parse_name_addr(value)
        out[str(na.uri)] = dict(na.params.items())
    return out


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- success and the 200 OK ----------------------------------------------------


def test_register_returns_binding_date_and_tag(h: Harness) -> None:
    response = h.send(register(C1))
    assert response.status == 200
    assert contacts(response) == {"sip:alice@192.0.2.10:5060": {"expires": "3600"}}
    date = response.headers.get("Date")
    assert date == "Sun, 01 Mar 2026 12:00:00 GMT" == formatdate(NOW, usegmt=True)
    check_date(date)  # RFC 1123, GMT, as the core's parser checks it
    assert parse_name_addr(response.headers.get("To") or "").tag == "srv1"
    assert response.headers.get("Call-ID") == "reg-1@client"
    [contact] = h.location.lookup(AOR, NOW)
    assert contact.flow == UDP and contact.call_id == "reg-1@client" and contact.cseq == 1


def test_http_date_and_format_q() -> None:
    assert http_date(0.0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert [format_q(q) for q in (1.0, 0.5, 0.0, 0.125, 0.1)] == ["1", "0.5", "0", "0.125", "0.1"]


def test_multiple_contacts_per_aor_and_all_listed(h: Harness) -> None:
    assert h.send(register(C1, f"{C2};q=0.5")).status == 200
    response = h.send(register("<sip:alice@192.0.2.12>", call_id="other", expires=600))
    assert contacts(response) == {
        "sip:alice@192.0.2.10:5060": {"expires": "3600"},
        "sip:alice@192.0.2.11:5060": {"expires": "3600", "q": "0.5"},
        "sip:alice@192.0.2.12": {"expires": "600"},
    }


def test_query_register_lists_bindings_and_changes_nothing(h: Harness) -> None:
    h.send(register(C1, expires=300))
    response = h.send(register(cseq=2), at=NOW + 100)
    assert response.status == 200
    assert contacts(response) == {"sip:alice@192.0.2.10:5060": {"expires": "200"}}
    assert h.location.bindings(AOR, h.now)[0].cseq == 1
    assert contacts(h.send(register(user="bob"), user="bob")) == {}


def test_contact_params_kept_and_expires_q_replaced(h: Harness) -> None:
    value = (
        f'"Alice" <sip:alice@192.0.2.10;transport=udp>;expires=120;q=0.7;+sip.instance={INSTANCE}'
    )
    response = h.send(register(value))
    [echoed] = response.headers.get_all("Contact")
    na = parse_name_addr(echoed)
    assert na.display_name == "Alice"
    assert na.params.items() == [
        ("+sip.instance", INSTANCE),
        ("expires", "120"),
        ("q", "0.7"),
    ]
    [contact] = h.location.bindings(AOR, NOW)
    assert contact.instance_id == INSTANCE.strip('"') and contact.q == 0.7


# --- expiry: header, parameter, default, minimum, maximum ----------------------


@pytest.mark.parametrize(
    ("header", "param", "granted"),
    [
        (None, None, 3600),  # default
        (120, None, 120),  # Expires header
        (120, "300", 300),  # parameter beats header
        (None, "60", 60),  # exactly the minimum
        (None, "100000", 86400),  # clamped to the maximum
        (100000, None, 86400),
        ("0099", None, 99),  # leading zeros are legal
    ],
)
def test_expiry_choice(
    h: Harness, header: int | str | None, param: str | None, granted: int
) -> None:
    contact = C1 if param is None else f"{C1};expires={param}"
    response = h.send(register(contact, expires=header))
    assert response.status == 200
    assert contacts(response)["sip:alice@192.0.2.10:5060"]["expires"] == str(granted)
    assert h.location.bindings(AOR, NOW)[0].expires_at == NOW + granted


@pytest.mark.parametrize(("header", "param"), [(30, None), (None, "1"), (3600, "59")])
def test_too_brief_is_423_with_min_expires(
    h: Harness, header: int | None, param: str | None
) -> None:
    contact = C1 if param is None else f"{C1};expires={param}"
    response = h.send(register(contact, expires=header))
    assert (response.status, response.reason) == (423, "Interval Too Brief")
    assert response.headers.get("Min-Expires") == "60"
    assert h.uris() == []


def test_423_is_all_or_nothing(h: Harness) -> None:
    response = h.send(register(C1, f"{C2};expires=10"))
    assert response.status == 423
    assert h.uris() == []


def test_custom_limits() -> None:
    h = Harness(min_expires=300, default_expires=600, max_expires=900)
    assert h.send(register(C1, expires=200)).headers.get("Min-Expires") == "300"
    assert contacts(h.send(register(C1)))["sip:alice@192.0.2.10:5060"]["expires"] == "600"
    response = h.send(register(C1, cseq=2, expires=5000))
    assert contacts(response)["sip:alice@192.0.2.10:5060"]["expires"] == "900"


@pytest.mark.parametrize(
    "config",
    [
        {"min_expires": 0},
        {"min_expires": 4000},
        {"default_expires": 100000},
        {"max_contacts": 0},
    ],
)
def test_bad_configuration(config: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Registrar(MemoryLocationService(), domain=DOMAIN, **config)


def test_expiry_over_time(h: Harness) -> None:
    h.send(register(C1, expires=120))
    h.send(register(C2, call_id="other", expires=600))
    assert contacts(h.send(register(cseq=2), at=NOW + 119.6))["sip:alice@192.0.2.10:5060"] == {
        "expires": "1"
    }
    assert h.uris() == ["sip:alice@192.0.2.10:5060", "sip:alice@192.0.2.11:5060"]
    h.now = NOW + 120
    assert h.uris() == ["sip:alice@192.0.2.11:5060"]
    assert h.location.lookup(AOR, NOW + 600) == []


def test_removing_one_contact_keeps_the_others(h: Harness) -> None:
    h.send(register(C1, C2))
    response = h.send(register(f"{C1};expires=0", cseq=2))
    assert response.status == 200
    assert contacts(response) == {"sip:alice@192.0.2.11:5060": {"expires": "3600"}}
    response = h.send(register(C2, cseq=3, expires=0))
    assert (response.status, contacts(response)) == (200, {})
    # Removing a contact that is not bound is not an error.
    assert h.send(register(C2, cseq=4, expires=0)).status == 200


def test_refresh_is_matched_by_uri_equivalence(h: Harness) -> None:
    h.send(register("<sip:alice@HOST.example.test;transport=tcp>"))
    h.send(register("<sip:alice@host.example.test;transport=TCP>", cseq=2, expires=90))
    [contact] = h.location.bindings(AOR, NOW)
    assert contact.expires_at == NOW + 90 and contact.cseq == 2


# --- Contact: * -------------------------------------------------------------------


def test_star_with_expires_zero_removes_everything(h: Harness) -> None:
    h.send(register(C1, C2))
    h.send(register("<sip:alice@192.0.2.12>", call_id="other"))
    response = h.send(register("*", cseq=2, expires=0))
    assert (response.status, contacts(response)) == (200, {})
    assert h.location.count() == 0


@pytest.mark.parametrize(
    ("values", "expires"),
    [
        (("*",), None),
        (("*",), 60),
        (("*", C1), 0),
        ((C1, "*"), 0),
        (("*;expires=0",), 0),
    ],
)
def test_star_misuse_is_400(h: Harness, values: tuple[str, ...], expires: int | None) -> None:
    h.send(register(C1))
    response = h.send(register(*values, cseq=2, expires=expires, raw=True))
    assert response.status == 400
    assert h.uris() == ["sip:alice@192.0.2.10:5060"]


def test_star_respects_cseq_order(h: Harness) -> None:
    h.send(register(C1, cseq=5))
    assert h.send(register("*", cseq=5, expires=0)).status == 500
    assert h.uris() == ["sip:alice@192.0.2.10:5060"]
    assert h.send(register("*", call_id="another", cseq=1, expires=0)).status == 200
    assert h.uris() == []


# --- q-values and lookup order ----------------------------------------------------


@pytest.mark.parametrize(
    ("q", "ok"),
    [
        ("0", True),
        ("0.", True),
        ("0.5", True),
        ("0.125", True),
        ("1", True),
        ("1.000", True),
        ("1.5", False),
        ("1.001", False),
        ("2", False),
        ("0.1234", False),
        ("-0.5", False),
        ("abc", False),
    ],
)
def test_q_values(h: Harness, q: str, ok: bool) -> None:
    response = h.send(register(f"{C1};q={q}"))
    assert response.status == (200 if ok else 400)
    assert len(h.uris()) == int(ok)


def test_q_flag_without_value_is_400(h: Harness) -> None:
    assert h.send(register(f"{C1};q")).status == 400


def test_lookup_orders_by_q_then_most_recent(h: Harness) -> None:
    h.send(register(f"{C1};q=0.5", "<sip:alice@192.0.2.1>;q=0.9"), at=NOW)
    h.send(register(f"{C2};q=0.5", call_id="later"), at=NOW + 10)
    h.send(register("<sip:alice@192.0.2.2>", call_id="x"), at=NOW + 20)
    order = [str(c.uri) for c in h.location.lookup(AOR, NOW + 30)]
    assert order == [
        "sip:alice@192.0.2.2",
        "sip:alice@192.0.2.1",
        "sip:alice@192.0.2.11:5060",  # q=0.5, registered later
        "sip:alice@192.0.2.10:5060",
    ]


# --- Call-ID and CSeq (§10.3 step 7) ----------------------------------------------


@pytest.mark.parametrize(
    ("call_id", "cseq", "status"),
    [
        ("reg-1@client", 9, 500),  # same Call-ID, lower CSeq: out of order
        ("reg-1@client", 10, 500),  # same Call-ID, same CSeq: replay
        ("reg-1@client", 11, 200),  # same Call-ID, higher CSeq: update
        ("reboot@client", 1, 200),  # new Call-ID: replaces whatever the CSeq
    ],
)
def test_call_id_and_cseq_ordering(h: Harness, call_id: str, cseq: int, status: int) -> None:
    h.send(register(C1, cseq=10, expires=600))
    response = h.send(register(C1, C2, call_id=call_id, cseq=cseq, expires=900))
    assert response.status == status
    bound = h.location.bindings(AOR, NOW)
    if status == 500:  # the whole request failed: C2 was not added either
        assert [(str(c.uri), c.cseq, c.expires_at) for c in bound] == [
            ("sip:alice@192.0.2.10:5060", 10, NOW + 600)
        ]
    else:
        assert {(c.call_id, c.cseq, c.expires_at) for c in bound} == {(call_id, cseq, NOW + 900)}


def test_removal_with_stale_cseq_is_refused(h: Harness) -> None:
    h.send(register(C1, cseq=3))
    assert h.send(register(C1, cseq=2, expires=0)).status == 500
    assert h.uris() == ["sip:alice@192.0.2.10:5060"]


# --- identity, domain, limits and malformed input ----------------------------------


@pytest.mark.parametrize(
    ("to", "status", "reason"),
    [
        (f"sip:bob@{DOMAIN}", 403, "Not allowed to register this address"),
        (
            f"sip:Alice@{DOMAIN}",
            403,
            "Not allowed to register this address",
        ),  # user is case-sensitive
        ("sip:alice@other.test", 404, "Not a domain of this registrar"),
        (f"sip:{DOMAIN}", 404, "To is not an address of record"),
        ("tel:+15551234", 404, "To is not an address of record"),
    ],
)
def test_to_must_be_own_aor_in_our_domain(h: Harness, to: str, status: int, reason: str) -> None:
    response = h.send(register(C1, to=to))
    assert (response.status, response.reason) == (status, reason)
    assert h.location.count() == 0


@pytest.mark.parametrize(
    "to", [f"sips:alice@{DOMAIN}", "sip:alice@EXAMPLE.test", f"sip:alice@{DOMAIN}:5061"]
)
def test_aor_is_canonical(h: Harness, to: str) -> None:
    assert h.send(register(C1, to=to)).status == 200
    assert h.uris(AOR) == ["sip:alice@192.0.2.10:5060"]


def test_too_many_contacts_in_one_request() -> None:
    h = Harness(max_contacts=2)
    response = h.send(register(C1, C2, "<sip:alice@192.0.2.12>"))
    assert (response.status, response.reason) == (403, "Too many contacts (at most 2)")
    assert h.uris() == []


def test_too_many_contacts_in_total() -> None:
    h = Harness(max_contacts=2)
    h.send(register(C1, C2))
    response = h.send(register("<sip:alice@192.0.2.12>", call_id="other"))
    assert (response.status, response.reason) == (403, "Too many contacts (at most 2)")
    # Refreshing or swapping within the limit still works.
    assert h.send(register(C1, cseq=2)).status == 200
    assert h.send(register(f"{C1};expires=0", "<sip:alice@192.0.2.12>", cseq=3)).status == 200


@pytest.mark.parametrize(
    ("values", "extra"),
    [
        (("<sip:alice@192.0.2.10",), ()),  # unterminated <
        (("<tel:+15551234>",), ()),  # only SIP contacts can be reached
        ((f"{C1};expires=soon",), ()),
        ((f"{C1};expires",), ()),
        ((C1, "<sip:alice@192.0.2.10:5060;lr>"), ()),  # the same contact twice
        ((C1,), ("Expires: tomorrow",)),
        ((f"{C1};+sip.instance",), ()),
        ((f"{C1};+sip.instance={INSTANCE};reg-id=0",), ()),
        ((f"{C1};+sip.instance={INSTANCE};reg-id=x",), ()),
        (
            (f"{C1};+sip.instance={INSTANCE};reg-id=1", f"{C2};+sip.instance={INSTANCE};reg-id=2"),
            (),
        ),
        ((C1,), ("Path: sip:edge.example.test;lr",)),  # Path must be name-addr
    ],
)
def test_malformed_is_400_and_changes_nothing(
    h: Harness, values: tuple[str, ...], extra: tuple[str, ...]
) -> None:
    response = h.send(register(*values, extra=extra, raw=True))
    assert response.status == 400, response.reason
    assert h.location.count() == 0


def test_unknown_required_extension_is_420(h: Harness) -> None:
    response = h.send(register(C1, extra=("Require: path, foo, Bar",)))
    assert response.status == 420
    assert response.headers.get("Unsupported") == "bar, foo"
    assert h.send(register(C1, extra=("Require: outbound, path",))).status == 200


def test_non_register_is_a_caller_bug(h: Harness) -> None:
    request = register(C1)
    request.method = "INVITE"
    with pytest.raises(ValueError):
        h.send(request)


# --- RFC 5626 outbound and RFC 3327 Path --------------------------------------------


def test_outbound_reg_id_gets_require_outbound(h: Harness) -> None:
    contact = f"{C1};+sip.instance={INSTANCE};reg-id=1"
    response = h.send(register(contact, extra=("Supported: path, outbound",)), flow=TLS)
    assert response.headers.get_all("Require") == ["outbound"]
    echoed = contacts(response)["sip:alice@192.0.2.10:5060"]
    assert echoed == {"+sip.instance": INSTANCE, "reg-id": "1", "expires": "3600"}
    # Without Supported: outbound the registrar must not require it.
    response = h.send(register(contact, cseq=2), flow=TLS)
    assert response.headers.get("Require") is None


def test_same_instance_and_reg_id_replace_the_flow(h: Harness) -> None:
    h.send(register(f"{C1};+sip.instance={INSTANCE};reg-id=1"), flow=TLS)
    new_flow = Flow("tls", ("192.0.2.99", 41000), ("198.51.100.1", 5061), conn_id=8)
    h.send(register(f"{C2};+sip.instance={INSTANCE};reg-id=1", cseq=2), flow=new_flow)
    [contact] = h.location.bindings(AOR, NOW)
    assert (str(contact.uri), contact.flow, contact.reg_id) == (
        "sip:alice@192.0.2.11:5060",
        new_flow,
        1,
    )
    # A second flow of the same instance (reg-id 2) is a second binding.
    h.send(register(f"{C1};+sip.instance={INSTANCE};reg-id=2", cseq=3), flow=TLS)
    assert len(h.location.bindings(AOR, NOW)) == 2


def test_reg_id_without_instance_is_ignored(h: Harness) -> None:
    response = h.send(register(f"{C1};reg-id=1", extra=("Supported: outbound",)))
    assert response.status == 200 and response.headers.get("Require") is None
    assert h.location.bindings(AOR, NOW)[0].reg_id is None


def test_path_is_stored_and_echoed_when_supported(h: Harness) -> None:
    paths = ("Path: <sip:edge1.example.test;lr>", "Path: <sip:edge2.example.test;lr>")
    response = h.send(register(C1, extra=(*paths, "Supported: path")))
    assert response.headers.get_all("Path") == [
        "<sip:edge1.example.test;lr>",
        "<sip:edge2.example.test;lr>",
    ]
    assert h.location.bindings(AOR, NOW)[0].path == (
        "<sip:edge1.example.test;lr>",
        "<sip:edge2.example.test;lr>",
    )
    response = h.send(register(C1, cseq=2, extra=paths))
    assert response.headers.get_all("Path") == []


def test_other_location_refusals_are_500() -> None:
    class Refusing(MemoryLocationService):
        def apply(
            self, aor: str, change: RegisterChange, now: float, *, max_contacts: int | None = None
        ) -> list[Contact]:
            raise LocationError("pool state unavailable")

    registrar = Registrar(Refusing(), domain=DOMAIN)
    response = registrar.handle(register(C1), user="alice", flow=UDP, now=NOW, to_tag="t")
    assert (response.status, response.reason) == (500, "pool state unavailable")
