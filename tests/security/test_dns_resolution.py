"""An attacker's session against DNS resolution: a hostile partner zone.

Whoever controls a domain's DNS decides what its SRV and address records say.
A partner (or anyone who names a domain in a request) must not be able to make
Conclave connect into the internal network, to itself, or into a lookup storm:

* SRV targets that resolve to loopback, private, link-local or multicast
  addresses are dropped, and a domain that has nothing else is an error;
* public addresses among them are still used, the rest dropped;
* a zone with hundreds of SRV records costs at most ``MAX_SRV_RECORDS``
  address lookups;
* RFC 2782's "." target (no such service) is an answer, not a connection;
* what is not a DNS name never reaches the DNS server at all.

The zone is served by a real dnsmasq on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from conclave.transport.resolve import (
    FEDERATION_SERVICE,
    MAX_SRV_RECORDS,
    ResolveError,
    SipResolver,
)
from tests.e2e.dnsmasq import Dnsmasq

SERVICE = FEDERATION_SERVICE

ZONE = [
    # evil.test points its federation service at our own internal network.
    f"srv-host={SERVICE}.evil.test,inside.evil.test,5061,0,0",
    f"srv-host={SERVICE}.evil.test,self.evil.test,5061,1,0",
    f"srv-host={SERVICE}.evil.test,linklocal.evil.test,5061,2,0",
    "host-record=inside.evil.test,10.0.0.1",
    "host-record=inside.evil.test,192.168.1.10",
    "host-record=self.evil.test,127.0.0.1,::1",
    "host-record=linklocal.evil.test,169.254.169.254",
    # mixed.test has one public server among internal ones.
    f"srv-host={SERVICE}.mixed.test,inside.mixed.test,5061,0,0",
    f"srv-host={SERVICE}.mixed.test,edge.mixed.test,5061,10,0",
    "host-record=inside.mixed.test,172.16.0.5",
    "host-record=edge.mixed.test,8.8.4.4",
    # none.test says it has no federation service at all.
    f"srv-host={SERVICE}.none.test",
    # storm.test publishes 200 targets.
    *(f"srv-host={SERVICE}.storm.test,t{n}.storm.test,5061,0,1" for n in range(200)),
    *(f"host-record=t{n}.storm.test,8.8.{n // 250}.{n % 250 + 1}" for n in range(200)),
]
NAMES = ["evil.test", "mixed.test", "none.test", "storm.test"]


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    directory: Path = tmp_path_factory.mktemp("hostile-zone")
    conf = directory / "zone.conf"
    local = [f"local=/{name}/" for name in NAMES]
    conf.write_text("\n".join([*ZONE, *local]) + "\n")
    server = Dnsmasq(conf).start()
    yield server
    server.stop()


def resolve(dns: Dnsmasq, domain: str) -> list[tuple[str, int]]:
    async def run() -> list[tuple[str, int]]:
        hops = await SipResolver(["127.0.0.1"], port=dns.port).servers(domain, SERVICE)
        return [(h.address, h.port) for h in hops]

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_a_zone_pointing_inside_is_refused(dns: Dnsmasq) -> None:
    with pytest.raises(ResolveError, match="only to addresses that are not public"):
        resolve(dns, "evil.test")


def test_only_the_public_servers_of_a_mixed_zone_are_used(dns: Dnsmasq) -> None:
    assert resolve(dns, "mixed.test") == [("8.8.4.4", 5061)]


def test_no_service_is_an_answer(dns: Dnsmasq) -> None:
    with pytest.raises(ResolveError, match=r"publishes no _sipfederationtls\._tcp SRV record"):
        resolve(dns, "none.test")


def test_a_storm_of_records_is_bounded(dns: Dnsmasq) -> None:
    before = dns.log.read_text().count("query[A] t")
    hops = resolve(dns, "storm.test")
    assert len(hops) == MAX_SRV_RECORDS
    assert dns.log.read_text().count("query[A] t") - before <= MAX_SRV_RECORDS


def test_names_that_are_not_domains_never_reach_the_dns(dns: Dnsmasq) -> None:
    before = dns.log.read_text().count("query[")
    for bad in ("127.0.0.1", "evil.test\r\nVia: x", "a" * 300 + ".test", "_x.evil.test"):
        with pytest.raises(ResolveError, match="not a DNS domain name"):
            resolve(dns, bad)
    assert dns.log.read_text().count("query[") == before
