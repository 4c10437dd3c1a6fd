"""A publication's DNS zones as dnsmasq configuration (``topology publish --output``).

``conclave topology publish`` lists the records each zone needs; an
organisation whose DNS is dnsmasq (a small site, a lab, the test suite) can
serve them as they are: ``dnsmasq --conf-file=dns-internal.dnsmasq.conf``.
Each A or AAAA record becomes a ``host-record`` line, each SRV record a
``srv-host`` line (dnsmasq's own syntax: name, target, port, priority,
weight), and every name gets a ``local`` line: dnsmasq answers for it from
these lines alone (an empty answer for a type it has none of, say AAAA for
an IPv4-only host) instead of refusing or asking elsewhere. Names are written
as the publication has them, which the topology's checks have already made
valid DNS names.
"""

from __future__ import annotations

from collections.abc import Sequence

from .publish import DnsRecord

ZONES = ("internal", "external")


def dnsmasq_conf(records: Sequence[DnsRecord], zone: str) -> str:
    """The ``zone`` records of ``records`` as dnsmasq configuration lines."""
    if zone not in ZONES:
        raise ValueError(f"zone must be one of {', '.join(ZONES)}, not {zone!r}")
    lines = [
        f"# The {zone} DNS zone of a Conclave topology (conclave topology publish).",
        "# Serve it with: dnsmasq --conf-file=THIS-FILE",
    ]
    for record in records:
        if record.zone != zone:
            continue
        if record.type in ("A", "AAAA"):
            lines.append(f"host-record={record.name},{record.value}  # {record.purpose}")
        elif record.type == "SRV":
            priority, weight, port, target = record.value.split()
            target = target.rstrip(".")
            lines.append(
                f"srv-host={record.name},{target},{port},{priority},{weight}  # {record.purpose}"
            )
        else:
            raise ValueError(f"record type {record.type} has no dnsmasq form")
    names = sorted({r.name for r in records if r.zone == zone})
    lines += [f"local=/{name}/" for name in names]
    return "\n".join(lines) + "\n"
