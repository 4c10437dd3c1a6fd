"""RFC 2782 ordering, domain checks and the public-address rule of the SIP resolver."""

from __future__ import annotations

import asyncio
import collections
import random

import pytest

from conclave.transport.resolve import (
    ResolveError,
    SipResolver,
    SrvRecord,
    check_domain,
    is_public,
    rfc2782_order,
)


def srv(priority: int, weight: int, target: str) -> SrvRecord:
    return SrvRecord(priority, weight, 5061, target)


def test_lower_priority_always_comes_first() -> None:
    records = [srv(20, 100, "c"), srv(10, 0, "b"), srv(10, 5, "a"), srv(30, 1, "d")]
    for seed in range(50):
        order = [r.target for r in rfc2782_order(records, random.Random(seed))]
        assert order[-1] == "d" and order[-2] == "c" and set(order[:2]) == {"a", "b"}


def test_weights_share_the_first_place_in_proportion() -> None:
    records = [srv(0, 80, "big"), srv(0, 20, "small")]
    rng = random.Random(2782)
    first = collections.Counter(rfc2782_order(records, rng)[0].target for _ in range(5000))
    assert 0.75 < first["big"] / 5000 < 0.85
    # A zero weight still gets a small chance, never more than its share.
    zero = [srv(0, 0, "zero"), srv(0, 100, "heavy")]
    picks = collections.Counter(rfc2782_order(zero, rng)[0].target for _ in range(5000))
    assert 0 < picks["zero"] < 100


@pytest.mark.parametrize(
    "domain",
    ["", "localhost", "192.0.2.1", "[2001:db8::1]", "a..b.test", "-bad.test", "x" * 64 + ".test",
     ("a" * 60 + ".") * 5 + "test", "under_score.test", "sp ace.test", "example.123"],
)  # fmt: skip
def test_only_dns_names_are_resolved(domain: str) -> None:
    with pytest.raises(ResolveError, match="not a DNS domain name"):
        check_domain(domain)


def test_domains_are_normalised() -> None:
    assert check_domain("Partner.Example.TEST.") == "partner.example.test"


@pytest.mark.parametrize(
    ("address", "public"),
    [("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False), ("::1", False),
     ("10.1.2.3", False), ("192.168.1.1", False), ("172.16.0.1", False), ("169.254.1.1", False),
     ("fe80::1", False), ("fc00::1", False), ("224.0.0.1", False), ("0.0.0.0", False),
     ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True), ("100.64.0.1", False)],
)  # fmt: skip
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_a_resolver_needs_a_name_server() -> None:
    with pytest.raises(ValueError):
        SipResolver([])


def test_a_bad_domain_fails_before_any_query() -> None:
    # 192.0.2.1 (TEST-NET-1) answers nothing: a query would time out, not fail at once.
    resolver = SipResolver(["192.0.2.1"], timeout=30)
    with pytest.raises(ResolveError, match="not a DNS domain name"):
        asyncio.run(asyncio.wait_for(resolver.servers("10.0.0.1"), 5))
