"""The Edge's federation policy and its tokens, one layer at a time (no sockets)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from conclave.pki import create_ca, load_ca
from conclave.services.edge.federation import (
    FederationPolicy,
    PartnerPolicy,
    covers,
    partner_for_certificate,
)
from conclave.services.edge.state import FlowTokens, HiddenDialogs
from conclave.sip.flow import Flow


def test_suffixes_cover_the_domain_and_names_under_it() -> None:
    assert covers("org-b.test", "org-b.test") and covers("org-b.test", "sip.org-b.test")
    assert not covers("org-b.test", "evil-org-b.test") and not covers("b.test", "org-b.test.")


def test_allow_list_partners_block_list_and_open() -> None:
    policy = FederationPolicy(
        enabled=True,
        partners={"org-b.test": PartnerPolicy("org-b.test")},
        allow=("org-d.test",),
        block=("bad.org-d.test",),
    )
    assert policy.allowed("org-b.test") and policy.allowed("eu.org-d.test")
    assert not policy.allowed("bad.org-d.test") and not policy.allowed("x.bad.org-d.test")
    assert not policy.allowed("org-c.test")
    assert FederationPolicy(enabled=True, open=True, block=("c.test",)).allowed("any.test")
    assert not FederationPolicy(enabled=True, open=True, block=("c.test",)).allowed("c.test")
    assert not FederationPolicy(enabled=False, open=True).allowed("any.test")


def test_each_partner_has_its_own_rate() -> None:
    policy = FederationPolicy(
        enabled=True, partners={"b.test": PartnerPolicy("b.test", rate=5)}, allow=("c.test",)
    )
    admitted = [policy.admit("b.test", 100.0) for _ in range(8)]
    assert admitted.count(True) == 5
    assert policy.admit("b.test", 100.2)  # one more token after 0.2 s at 5/s
    assert [policy.admit("c.test", 100.0) for _ in range(20)].count(True) == 20  # the default
    assert policy.throttle_report("b.test", 100.2) == 3
    assert policy.throttle_report("b.test", 101.0) is None  # once per interval


def _server_cert(ca_dir: Path, name: str) -> bytes:
    issued = load_ca(ca_dir).issue_server([name])
    cert_path, key_path = ca_dir.parent / f"{name}.crt", ca_dir.parent / f"{name}.key"
    issued.write(cert_path, key_path)
    from conclave.pki import load_certificate

    return load_certificate(cert_path).public_bytes(serialization.Encoding.DER)


def test_a_partner_is_known_by_its_own_ca_and_its_domain(tmp_path: Path) -> None:
    for org in ("b", "c"):
        create_ca(tmp_path / org / "ca", common_name=f"CA {org}")
    cas = {org: tuple(load_ca(tmp_path / org / "ca").certificate for _ in (0,)) for org in "bc"}
    policy = FederationPolicy(
        enabled=True,
        partners={
            "org-b.test": PartnerPolicy("org-b.test", cas=cas["b"]),
            "org-c.test": PartnerPolicy("org-c.test", cas=cas["c"]),
        },
        block=("org-c.test",),
    )
    assert (
        partner_for_certificate(_server_cert(tmp_path / "b" / "ca", "sip.org-b.test"), policy)
        == "org-b.test"
    )
    # org-b's CA naming org-c's host, or any other domain: nobody.
    assert (
        partner_for_certificate(_server_cert(tmp_path / "b" / "ca", "sip.org-c.test"), policy)
        is None
    )
    assert (
        partner_for_certificate(_server_cert(tmp_path / "b" / "ca", "sip.org-e.test"), policy)
        is None
    )
    # org-c's own certificate, but org-c is blocked.
    assert (
        partner_for_certificate(_server_cert(tmp_path / "c" / "ca", "sip.org-c.test"), policy)
        is None
    )
    assert partner_for_certificate(b"not a certificate", policy) is None


def test_flow_tokens_name_only_flows_this_edge_named() -> None:
    tokens = FlowTokens(key=b"k" * 32)
    flow = Flow("tls", ("192.0.2.1", 5061), ("203.0.113.1", 443), 77)
    token = tokens.token(flow)
    assert tokens.flow(token) == flow
    number, _, mac = token.partition("-")
    assert tokens.flow(f"{number}-{'0' * len(mac)}") is None  # forged MAC
    assert FlowTokens(key=b"x" * 32).flow(token) is None  # another run's key
    assert tokens.flow("zz-00") is None and tokens.flow("") is None
    tokens.forget(flow)
    assert tokens.flow(token) is None  # its connection closed


def test_hidden_dialogs_expire_and_end_with_their_connection() -> None:
    dialogs = HiddenDialogs()
    flow = Flow("tls", ("192.0.2.1", 5061), ("203.0.113.1", 443), 5)
    one = dialogs.open(flow, "call-1", 0.0)
    partner = dialogs.open(flow, "call-2", 0.0, partner="org-b.test")
    assert dialogs.get(one.id, 1.0) is one and len(one.id) == 32
    assert dialogs.flow_closed(flow) == 1  # a partner's dialog outlives one connection
    assert dialogs.get(one.id, 2.0) is None and dialogs.get(partner.id, 2.0) is partner
    assert dialogs.get(partner.id, 2.0 + 13 * 3600) is None  # idle too long


def test_discovered_partners_are_throttled_by_rate_and_by_distinct_contacts() -> None:
    from conclave.services.edge.federation import DISCOVERED_RATE, MAX_DISCOVERED_CONTACTS

    policy = FederationPolicy(
        enabled=True,
        partners={"listed.test": PartnerPolicy("listed.test", rate=100)},
        block=("blocked.test",),
        discovery=True,
    )
    assert policy.allowed("found.test") and policy.discovered("found.test")
    assert not policy.allowed("blocked.test")
    assert not policy.discovered("listed.test") and policy.partner("found.test").rate == 20
    assert [policy.admit("found.test", 5.0) for _ in range(30)].count(True) == DISCOVERED_RATE
    for n in range(MAX_DISCOVERED_CONTACTS):
        assert policy.note_contact("found.test", f"sip:user{n}@example.test")
    assert policy.note_contact("found.test", "sip:user0@example.test")  # one seen before
    assert not policy.note_contact("found.test", "sip:one-more@example.test")
    assert policy.note_contact("other.test", "sip:one-more@example.test")  # counted apart
    for n in range(MAX_DISCOVERED_CONTACTS + 5):  # a listed partner has no such limit
        assert policy.note_contact("listed.test", f"sip:user{n}@example.test")
