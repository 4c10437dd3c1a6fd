"""The planning tool: a topology from a few answers, sized from stated capacity figures.

Like Lync's Planning Tool it asks how many users there are, which sites,
whether there is remote access, federation, high availability and
compliance archiving, and proposes a topology. Every figure it sizes with is
a named constant below, printed with the plan, so the sizing can be checked
and redone by hand.

Sizing rules:

* each site gets one Front End pool for its users: a Standard Edition
  server when the site's users fit on one Front End and no high
  availability is asked for; otherwise an Enterprise pool of
  ``ceil(users / users_per_frontend)`` Front Ends (plus one spare with high
  availability, at least two), split into several pools beyond
  :data:`FRONTENDS_PER_POOL`;
* high availability also pairs the sites' pools two by two (pairing needs
  pools in different sites);
* remote access, or federation with at least one partner domain, adds an
  edge pool in the first site, sized for every user being remote at once
  (conservative), plus one spare with high availability; remote access of
  an Enterprise deployment adds a director pool of the same size in front
  of the Front Ends;
* federation is turned on only with partners to allow (``partners``): on
  with an empty allow-list it would open the edge's federation port for
  nobody, so without partners it stays off and the notes say so;
* every site gets a logging controller on a host of its own (the host that
  keeps every server's logs runs nothing users reach);
* compliance archiving archives everything, in critical mode.

Addresses are placeholders from documentation ranges (10.S.0.x internal,
172.16.S.x perimeter, 203.0.113.x public, RFC 5737) and the back end URL is
a placeholder: replace them before publishing.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from .document import Problem, TopologyError, problem_from_error, topology_from_mapping
from .model import DnsName, Name, Text, Topology

# --- capacity figures --------------------------------------------------------------------

LYNC_USERS_PER_FRONTEND = 6_660
"""Reference: Lync Server 2013 capacity planning, 6,660 users per Front End Server
(80,000 users in a pool of 12 Front Ends)."""
LYNC_USERS_PER_EDGE = 12_000
"""Reference: Lync Server 2013, 12,000 concurrent remote users per Edge Server."""
USERS_PER_FRONTEND = 5_000
"""Conclave's figure, an assumption and not a measurement: one Front End is a single
Python process on one core, so we plan below Lync's 6,660 until the capacity benchmark
(bench/capacity.py, Lync's user model) publishes a measured figure. Override it with
``users_per_frontend`` in the answers once you have measured your own hardware."""
USERS_PER_EDGE = LYNC_USERS_PER_EDGE
"""Lync's figure, used as a placeholder: the edge role is not built yet, so nothing of
ours has been measured. Directors are sized the same way."""
FRONTENDS_PER_POOL = 12
"""Lync's limit of Front Ends in one pool, kept: larger sites get several pools."""

FIGURES = (
    ("users per Front End (Conclave, assumed)", USERS_PER_FRONTEND),
    ("users per Front End (Lync 2013 reference)", LYNC_USERS_PER_FRONTEND),
    ("remote users per edge (Lync 2013 reference, used as ours)", USERS_PER_EDGE),
    ("Front Ends per pool (Lync limit, kept)", FRONTENDS_PER_POOL),
)


class Answers(BaseModel):
    """What the planner asks; ``--answers FILE`` gives them as TOML or JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    organisation: Text = "Example organisation"
    domain: DnsName
    users: Annotated[int, Strict(), Field(ge=1, le=10_000_000)]
    sites: Annotated[list[Name], Field(min_length=1)] = ["main"]
    site_users: dict[Name, Annotated[int, Strict(), Field(ge=1)]] = {}
    """users per site; by default users are spread evenly"""
    remote_access: Annotated[bool, Strict()] = False
    federation: Annotated[bool, Strict()] = False
    partners: Annotated[list[DnsName], Field(max_length=1000)] = []
    """partner domains to federate with (the allow-list); federation stays off without"""
    high_availability: Annotated[bool, Strict()] = False
    compliance_archiving: Annotated[bool, Strict()] = False
    users_per_frontend: Annotated[int, Strict(), Field(ge=1)] = USERS_PER_FRONTEND
    directory_lockout_threshold: Annotated[int, Strict(), Field(ge=0)] = 0
    """the user directory's own lockout threshold (0: none)"""


@dataclass
class Plan:
    topology: Topology
    sizing: list[str] = field(default_factory=list)
    """how each pool was sized, one line each"""
    notes: list[str] = field(default_factory=list)
    """what to replace or decide before publishing"""


def site_name(text: str) -> str:
    """A valid site name from what a user typed ("New York" -> "new-york")."""
    return re.sub(r"[^a-z0-9-]+", "-", text.strip().lower()).strip("-") or "site"


def load_answers(path: Path) -> Answers:
    """Answers from a TOML or JSON file; :class:`TopologyError` names any bad key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(str(path), [Problem("(answers)", f"cannot read: {exc}")]) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TopologyError(str(path), [Problem("(answers)", f"cannot parse: {exc}")]) from None
    return answers_from_mapping(data, source=str(path))


def answers_from_mapping(data: Any, *, source: str = "answers") -> Answers:
    try:
        answers = Answers.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(source, [problem_from_error(e) for e in exc.errors()]) from None
    if len(set(answers.sites)) != len(answers.sites):
        raise TopologyError(source, [Problem("sites", "names a site twice")])
    unknown = sorted(set(answers.site_users) - set(answers.sites))
    if unknown:
        raise TopologyError(source, [Problem(f"site_users.{unknown[0]}", "not one of sites")])
    return answers


def _split(answers: Answers) -> dict[str, int]:
    if answers.site_users:
        return {s: answers.site_users.get(s, 0) for s in answers.sites}
    share, extra = divmod(answers.users, len(answers.sites))
    return {s: share + (1 if i < extra else 0) for i, s in enumerate(answers.sites)}


def _count(users: int, per_host: int, spare: bool) -> int:
    count = max(1, math.ceil(users / per_host))
    return max(count + 1, 2) if spare else count


def plan(answers: Answers) -> Plan:
    """The proposed topology for ``answers``; it passes ``topology check``."""
    domain, ha = answers.domain, answers.high_availability
    per_fe = answers.users_per_frontend
    sizing: list[str] = []
    notes: list[str] = []
    sites: dict[str, Any] = {}
    pools: dict[str, Any] = {}
    frontend_pools: list[tuple[str, str]] = []  # (pool, site)
    enterprise = False
    for s, (site, users) in enumerate(_split(answers).items(), start=1):
        sites[site] = {"description": f"{users} users"}
        if users == 0:
            continue
        if users <= per_fe and not ha:
            name = f"se-{site}"
            pools[name] = {
                "site": site,
                "edition": "standard",
                "members": [_host(f"fe-{site}", domain, f"10.{s}.0.10", ["frontend"])],
            }
            sizing.append(
                f"{site}: {users} users fit one Front End ({per_fe}/FE): Standard Edition "
                f"server fe-{site}"
            )
            frontend_pools.append((name, site))
            _logging_pool(pools, sizing, site, s, domain)
            continue
        enterprise = True
        count = _count(users, per_fe, ha)
        pool_count = math.ceil(count / FRONTENDS_PER_POOL)
        sizing.append(
            f"{site}: {users} users / {per_fe} per FE = {math.ceil(users / per_fe)} Front End(s)"
            + (" + 1 spare (high availability, at least 2)" if ha else "")
            + f" = {count}, in {pool_count} pool(s) of at most {FRONTENDS_PER_POOL}"
        )
        made = 0
        for p in range(1, pool_count + 1):
            size = min(FRONTENDS_PER_POOL, count - made)
            name = f"pool-{site}" + (f"-{p}" if pool_count > 1 else "")
            pools[name] = {
                "site": site,
                "edition": "enterprise",
                "fqdn": f"{name}.{domain}",
                "database": f"postgresql://conclave@db-{name}.{domain}/conclave",
                "members": [
                    _host(f"fe-{site}-{made + i}", domain, f"10.{s}.{p}.{10 + i}", ["frontend"])
                    for i in range(1, size + 1)
                ],
            }
            made += size
            frontend_pools.append((name, site))
        _logging_pool(pools, sizing, site, s, domain)
    first_site = answers.sites[0]
    federation = answers.federation and bool(answers.partners)
    edge_needed = answers.remote_access or federation
    if edge_needed:
        remote = answers.users
        count = _count(remote, USERS_PER_EDGE, ha)
        pools[f"edge-{first_site}"] = {
            "site": first_site,
            "edition": "enterprise",
            "fqdn": f"edge-{first_site}.{domain}",
            "members": [_edge(f"edge-{first_site}-{i}", domain, i) for i in range(1, count + 1)],
        }
        sizing.append(
            f"edge: {remote} users, all assumed remote at once / {USERS_PER_EDGE} per edge"
            + (" + 1 spare" if ha else "")
            + f" = {count} edge(s) in {first_site}"
        )
        if answers.remote_access and enterprise:
            pools[f"dir-{first_site}"] = {
                "site": first_site,
                "edition": "enterprise",
                "fqdn": f"dir-{first_site}.{domain}",
                "members": [
                    _host(f"dir-{first_site}-{i}", domain, f"10.1.9.{10 + i}", ["director"])
                    for i in range(1, count + 1)
                ],
            }
            sizing.append(f"director: sized like the edge, {count} in {first_site}")
        notes.append(
            "edge, director, mediation and chat are described and checked but "
            "`conclave serve` cannot run them yet"
        )
        notes.append(
            "the edge's external certificate must come from a public CA "
            "(see `conclave topology publish`)"
        )
    if ha:
        paired = _pair(frontend_pools, pools)
        if paired:
            sizing.append(
                "high availability: pools paired across sites: "
                + ", ".join(f"{a} <-> {b}" for a, b in paired)
            )
        done = {name for pair in paired for name in pair}
        unpaired = [p for p, _ in frontend_pools if p not in done]
        if unpaired:
            notes.append(
                "high availability: no pool in another site to pair "
                + ", ".join(unpaired)
                + " with; add a site for disaster recovery"
            )
    policies: dict[str, Any] = {
        "external_access": {"remote_users": answers.remote_access},
        "federation": {"enabled": federation, "allow": list(answers.partners)},
        "archiving": {"mode": "all" if answers.compliance_archiving else "off", "critical": True},
        "lockout": {
            "threshold": 10 if answers.directory_lockout_threshold == 0 else
            max(1, min(10, answers.directory_lockout_threshold - 1)),
            "duration": "10m",
            "directory_threshold": answers.directory_lockout_threshold,
        },
    }  # fmt: skip
    if answers.federation and not federation:
        notes.append(
            "federation: left off, as no partner domain was given; list them in "
            "policies.federation.allow and set policies.federation.enabled = true "
            "(an edge is needed for it)"
        )
    if enterprise:
        notes.append("replace each Enterprise pool's database URL with your PostgreSQL back end")
    notes.append("addresses are placeholders from documentation ranges: replace them with yours")
    document = {
        "organisation": {"name": answers.organisation, "sip_domains": [domain]},
        "requirements": {
            "users": answers.users,
            "remote_access": answers.remote_access,
            "federation": answers.federation,
            "high_availability": ha,
            "compliance_archiving": answers.compliance_archiving,
        },
        "sites": sites,
        "pools": pools,
        "policies": policies,
    }
    return Plan(topology_from_mapping(document, source="plan"), sizing, notes)


def _logging_pool(
    pools: dict[str, Any], sizing: list[str], site: str, index: int, domain: str
) -> None:
    """The site's logging controller, on a host of its own."""
    pools[f"log-{site}"] = {
        "site": site,
        "edition": "enterprise",  # a Standard Edition pool is a Front End
        "members": [_host(f"log-{site}", domain, f"10.{index}.0.5", ["logging-controller"])],
    }
    sizing.append(f"{site}: one logging controller host, log-{site}")


def _host(name: str, domain: str, address: str, roles: list[str]) -> dict[str, Any]:
    return {"name": name, "fqdn": f"{name}.{domain}", "address": address, "roles": roles}


def _edge(name: str, domain: str, index: int) -> dict[str, Any]:
    host = _host(name, domain, f"172.16.1.{10 + index}", ["edge"])
    host["edge"] = {
        "internal": {"fqdn": f"{name}.{domain}", "address": f"172.16.1.{10 + index}"},
        "external": {"fqdn": f"sip.{domain}", "address": f"203.0.113.{10 + index}"},
    }
    return host


def _pair(frontend_pools: list[tuple[str, str]], pools: dict[str, Any]) -> list[tuple[str, str]]:
    """Pair pools of the same edition two by two, each pair across two sites."""
    paired: list[tuple[str, str]] = []
    free = list(frontend_pools)
    while free:
        name, site = free.pop(0)
        edition = pools[name]["edition"]
        match = next(
            ((n, s) for n, s in free if s != site and pools[n]["edition"] == edition), None
        )
        if match is None:
            continue
        free.remove(match)
        pools[name]["paired_with"] = match[0]
        paired.append((name, match[0]))
    return paired
