"""Finding a SIP domain's servers in DNS: RFC 3263 §4.2 (SRV), RFC 2782 (order).

An edge federating with a partner looks up ``_sipfederationtls._tcp.<domain>``
(Lync's record; :data:`FEDERATION_SERVICE`), a client or a pool member looks
up ``_sip._tls.<domain>``; each SRV record names a host and a port, and the
host's A and AAAA records give the addresses to connect to. The order is
RFC 2782's: lowest priority first, and within one priority a random order
weighted by the records' weights, so load spreads as the zone's owner asked.

What a zone says is input from whoever controls that zone, so it is bounded
and checked before anything connects:

* the domain must be a DNS name (no IP literal, no oversized label);
* at most :data:`MAX_SRV_RECORDS` records and :data:`MAX_ADDRESSES` addresses
  per target are used, and each query gives up after :data:`QUERY_TIMEOUT`;
* unless the caller allows it (a test on loopback, a pool's own internal
  zone), addresses that are not public (loopback, private, link-local,
  multicast, reserved) are dropped: a partner's DNS must not make the edge
  connect into the internal network or to itself. A domain whose servers
  all resolve to such addresses is an error, not an empty answer.

The resolver asks the name servers it is given (``nameservers``, with a
port), not the system's, so a deployment names the DNS it trusts and a test
its own ``dnsmasq``. No answer is cached here: dnspython's resolver does not
cache unless told to, and the callers keep what they found for as long as a
connection lives.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

FEDERATION_SERVICE: Final = "_sipfederationtls._tcp"
"""The SRV service a federated partner publishes for its access edge (Lync's)."""

SIP_TLS_SERVICE: Final = "_sip._tls"
"""RFC 3263's service for SIP over TLS (clients and servers of a domain)."""

MAX_SRV_RECORDS: Final = 16
"""SRV records of one service used at most. A domain needs a handful (one per
edge or pool member); more only lets a hostile zone multiply our lookups."""

MAX_ADDRESSES: Final = 8
"""Addresses of one target used at most, for the same reason."""

QUERY_TIMEOUT: Final = 3.0
"""Seconds one query may take, retries included: a partner whose DNS does not
answer in this long is unreachable now, and the request waiting on it gets an
answer (a 5xx) while its client still waits."""

MAX_NAME_LENGTH: Final = 253
"""RFC 1035 §2.3.4: the longest name in text form."""

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class ResolveError(Exception):
    """The domain's servers cannot be found; the message is one line."""


@dataclass(frozen=True)
class Hop:
    """One address to try: the SRV target it came from, the address, the port."""

    target: str
    address: str
    port: int


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


def check_domain(domain: str) -> str:
    """``domain`` lowercased without a final dot; ResolveError if it is not a DNS name."""
    name = domain.strip().lower().rstrip(".")
    labels = name.split(".")
    if (
        not name
        or len(name) > MAX_NAME_LENGTH
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ResolveError(f"not a DNS domain name: {domain[:80]!r}")
    return name


def rfc2782_order(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """Lowest priority first; within a priority, a weighted random order
    (RFC 2782, "Usage rules": each pick is proportional to its weight among the
    records left, zero-weight records having a small chance)."""
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        # Zero weights first, as the RFC's running-sum selection places them.
        left = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while left:
            total = sum(r.weight for r in left)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(left):
                running += record.weight
                if running >= pick:
                    ordered.append(left.pop(index))
                    break
    return ordered


def is_public(address: str) -> bool:
    """True for an address on the public internet (not loopback, private,
    link-local, multicast, reserved or unspecified)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class SipResolver:
    """Finds the servers of a SIP domain through the given name servers."""

    def __init__(
        self,
        nameservers: Sequence[str],
        *,
        port: int = 53,
        allow_private: bool = False,
        timeout: float = QUERY_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        if not nameservers:
            raise ValueError("at least one name server is needed")
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = list(nameservers)
        self._resolver.port = port
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self.allow_private = allow_private
        self._rng = rng or random.SystemRandom()

    async def servers(self, domain: str, service: str = SIP_TLS_SERVICE) -> list[Hop]:
        """Every address to try for ``service`` of ``domain``, best first.

        ResolveError when the domain publishes no such service (RFC 2782: a
        single target of ``.`` says so explicitly), its DNS fails, or none of
        its servers has a usable address.
        """
        name = check_domain(domain)
        records = await self._srv(f"{service}.{name}")
        if not records:
            raise ResolveError(f"{name} publishes no {service} SRV record")
        hops: list[Hop] = []
        refused = 0
        for record in rfc2782_order(records, self._rng):
            for address in await self.addresses(record.target):
                if self.allow_private or is_public(address):
                    hops.append(Hop(record.target, address, record.port))
                else:
                    refused += 1
        if not hops:
            why = "only to addresses that are not public" if refused else "to no address"
            raise ResolveError(f"the {service} servers of {name} resolve {why}")
        return hops

    async def addresses(self, host: str) -> list[str]:
        """The A then AAAA addresses of ``host`` (at most :data:`MAX_ADDRESSES`)."""
        name = check_domain(host)
        found: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            answer = await self._query(name, rdtype)
            found += [rdata.address for rdata in answer]
        return found[:MAX_ADDRESSES]

    async def _srv(self, name: str) -> list[SrvRecord]:
        answer = await self._query(name, dns.rdatatype.SRV)
        records = [
            SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True).lower())
            for r in answer
        ][:MAX_SRV_RECORDS]
        if len(records) == 1 and records[0].target in ("", "."):
            return []  # RFC 2782: "the service is decidedly not available"
        return [r for r in records if r.target not in ("", ".")]

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[Any]:
        try:
            answer = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            seconds = self._resolver.lifetime
            raise ResolveError(f"DNS did not answer for {name} within {seconds:g}s") from None
        except dns.exception.DNSException as exc:
            raise ResolveError(f"DNS failed for {name}: {exc}") from None
        return list(answer.rrset or ())
