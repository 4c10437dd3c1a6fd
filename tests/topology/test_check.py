"""``topology check``: every broken topology is rejected with the right path and message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conclave.topology import TopologyError, check_topology, dumps_topology, loads_topology
from conclave.topology.checks import errors
from conclave.topology.document import Problem, dumps_toml, topology_from_mapping

from .helpers import Doc, base, edge_host, enterprise, host, make_certificate, with_edge, write

Mutation = Callable[[Doc], object]


def fe1(doc: Doc) -> Doc:
    member: Doc = doc["pools"]["se1"]["members"][0]
    return member


def problems_of(doc: Doc, directory: Path | None = None) -> list[Problem]:
    """Schema problems, or else the meaning's errors."""
    try:
        topology = topology_from_mapping(doc)
    except TopologyError as exc:
        return exc.problems
    path = write(directory, doc) if directory else None
    return errors(check_topology(topology, path))


def test_the_base_topology_is_valid(tmp_path: Path) -> None:
    assert problems_of(base(), tmp_path) == []
    assert problems_of(with_edge(base()), tmp_path) == []
    assert problems_of(enterprise(base()), tmp_path) == []


SCHEMA: list[tuple[str, Mutation, str, str]] = [
    (
        "bad fqdn",
        lambda d: fe1(d).update(fqdn="not_a_name"),
        "pools.se1.members[0].fqdn",
        "must be a fully qualified DNS name",
    ),
    (
        "unknown key",
        lambda d: fe1(d).update(colour="blue"),
        "pools.se1.members[0].colour",
        "unknown key",
    ),
    (
        "unknown role",
        lambda d: fe1(d).update(roles=["frontdoor"]),
        "pools.se1.members[0].roles[0]",
        "must be 'frontend', 'edge'",
    ),
    (
        "role twice",
        lambda d: fe1(d).update(roles=["frontend", "frontend"]),
        "pools.se1.members[0].roles",
        "lists 'frontend' twice",
    ),
    (
        "port out of range",
        lambda d: fe1(d).update(ports={"sip_tls": 70000}),
        "pools.se1.members[0].ports.sip_tls",
        "must be at most 65535",
    ),
    (
        "bad address",
        lambda d: fe1(d).update(address="10.0.0.300"),
        "pools.se1.members[0].address",
        "must be an IP address",
    ),
    (
        "no organisation",
        lambda d: d.pop("organisation"),
        "organisation",
        "required key is missing",
    ),
    (
        "bad site name",
        lambda d: d["sites"].update({"Head Office": {}}),
        "sites.Head Office",
        "bad name: must be a short name",
    ),
    (
        "unknown edition",
        lambda d: d["pools"]["se1"].update(edition="premium"),
        "pools.se1.edition",
        "must be 'standard' or 'enterprise'",
    ),
    (
        "no members",
        lambda d: d["pools"]["se1"].update(members=[]),
        "pools.se1.members",
        "must not be empty",
    ),
    (
        "string for a boolean",
        lambda d: d["policies"].update(anonymous_users="no"),
        "policies.anonymous_users",
        "must be true or false",
    ),
    (
        "admin without a port",
        lambda d: fe1(d).update(admin="127.0.0.1"),
        "pools.se1.members[0].admin",
        "must be ip:port",
    ),
]

MEANING: list[tuple[str, Mutation, str, str]] = [
    (
        "pool in an unknown site",
        lambda d: d["pools"]["se1"].update(site="paris"),
        "pools.se1.site",
        'no site "paris" (sites: hq, dr)',
    ),
    (
        "host in two pools",
        lambda d: d["pools"]["logs"]["members"][0].update(name="fe1"),
        "pools.logs.members[0].name",
        'host "fe1" is already a member of pool se1',
    ),
    (
        "two hosts with one FQDN",
        lambda d: d["pools"]["logs"]["members"][0].update(fqdn="fe1.example.test"),
        "pools.logs.members[0].fqdn",
        "is already the FQDN of host fe1",
    ),
    (
        "two hosts in a Standard Edition pool",
        lambda d: d["pools"]["se1"]["members"].append(host("fe2", "10.0.0.2", ["frontend"])),
        "pools.se1.members",
        "a Standard Edition pool has exactly one host (found 2)",
    ),
    (
        "Standard Edition with a back end",
        lambda d: d["pools"]["se1"].update(database="postgresql://db/x"),
        "pools.se1.database",
        "uses its embedded SQLite database",
    ),
    (
        "Standard Edition without a Front End",
        lambda d: fe1(d).update(roles=["chat"]),
        "pools.se1.members[0].roles",
        "runs the frontend role",
    ),
    (
        "Enterprise pool without FQDN",
        lambda d: enterprise(d)["pools"]["ee1"].pop("fqdn"),
        "pools.ee1.fqdn",
        "needs a pool FQDN",
    ),
    (
        "Enterprise pool without back end",
        lambda d: enterprise(d)["pools"]["ee1"].pop("database"),
        "pools.ee1.database",
        "need a PostgreSQL back end",
    ),
    (
        "Enterprise pool on SQLite",
        lambda d: enterprise(d)["pools"]["ee1"].update(database="sqlite:///x.db"),
        "pools.ee1.database",
        "back end is PostgreSQL",
    ),
    (
        "hosts of a pool with different roles",
        lambda d: enterprise(d)["pools"]["ee1"]["members"].append(
            host("ee1-fe2", "10.1.0.2", ["frontend", "chat"])
        ),
        "pools.ee1.members[1].roles",
        "every host of a pool runs the same roles",
    ),
    (
        "federation without an edge",
        lambda d: d["policies"].update(federation={"enabled": True, "allow": ["partner.test"]}),
        "policies.federation.enabled",
        "federation needs an edge",
    ),
    (
        "remote access without an edge",
        lambda d: d["policies"].update(external_access={"remote_users": True}),
        "policies.external_access.remote_users",
        "remote access needs an edge",
    ),
    (
        "anonymous users without an edge",
        lambda d: d["policies"].update(anonymous_users=True),
        "policies.anonymous_users",
        "anonymous access needs an edge",
    ),
    (
        "an edge without interfaces",
        lambda d: with_edge(d)["pools"]["edge"]["members"][0].pop("edge"),
        "pools.edge.members[0].edge",
        "an edge needs internal and external interfaces",
    ),
    (
        "an edge without external interface",
        lambda d: with_edge(d)["pools"]["edge"]["members"][0]["edge"].pop("external"),
        "pools.edge.members[0].edge.external",
        "an edge needs an external interface",
    ),
    (
        "an edge without internal interface",
        lambda d: with_edge(d)["pools"]["edge"]["members"][0]["edge"].pop("internal"),
        "pools.edge.members[0].edge.internal",
        "an edge needs an internal interface",
    ),
    (
        "an edge sharing its host",
        lambda d: with_edge(d)["pools"]["edge"]["members"][0].update(
            roles=["edge", "logging-controller"]
        ),
        "pools.edge.members[0].roles",
        "shares its host with no other role",
    ),
    (
        "edge interfaces on a Front End",
        lambda d: fe1(d).update(edge=edge_host()["edge"]),
        "pools.se1.members[0].edge",
        "only an edge has edge interfaces",
    ),
    (
        "director with a Front End",
        lambda d: fe1(d).update(roles=["frontend", "director"], ports={"director_tls": 5062}),
        "pools.se1.members[0].roles",
        "director and frontend may not share a host",
    ),
    (
        "ports collide on a host",
        lambda d: fe1(d).update(
            roles=["frontend", "logging-controller"], ports={"syslog_tls": 5061}
        ),
        "pools.se1.members[0].ports.syslog_tls",
        "TCP 10.0.0.1:5061 is also used by this host (pools.se1.members[0].ports.sip_tls",
    ),
    (
        "two hosts on one address and port",
        lambda d: d["pools"]["logs"]["members"][0].update(
            address="10.0.0.1", ports={"syslog_tls": 5061}
        ),
        "pools.logs.members[0].ports.syslog_tls",
        "is also used by host fe1",
    ),
    (
        "admin port on a SIP port",
        lambda d: fe1(d).update(admin="10.0.0.1:5061"),
        "pools.se1.members[0].admin",
        "is also used by this host",
    ),
    (
        "admin on a foreign address",
        lambda d: fe1(d).update(admin="10.9.9.9:8080"),
        "pools.se1.members[0].admin",
        "neither loopback nor this host's address",
    ),
    (
        "paired with a missing pool",
        lambda d: d["pools"]["se1"].update(paired_with="nope"),
        "pools.se1.paired_with",
        'no pool "nope"',
    ),
    (
        "paired with itself",
        lambda d: d["pools"]["se1"].update(paired_with="se1"),
        "pools.se1.paired_with",
        "cannot be paired with itself",
    ),
    (
        "paired in the same site",
        lambda d: enterprise(enterprise(d), "ee2", "hq", "10.2.0")["pools"]["ee1"].update(
            paired_with="ee2"
        ),
        "pools.ee1.paired_with",
        "is in the same site (hq)",
    ),
    (
        "paired with another edition",
        lambda d: enterprise(d, "ee2", "dr", "10.2.0")["pools"]["se1"].update(paired_with="ee2"),
        "pools.se1.paired_with",
        "paired pools have the same edition",
    ),
    (
        "paired with a pool that is not Front Ends",
        lambda d: d["pools"]["se1"].update(paired_with="logs"),
        "pools.se1.paired_with",
        "only Front End pools are paired",
    ),
    (
        "mediation without gateways",
        lambda d: d["pools"].update(
            med={
                "site": "hq",
                "edition": "enterprise",
                "fqdn": "med.example.test",
                "members": [host("med1", "10.0.0.7", ["mediation"])],
            }
        ),
        "pools.med.gateways",
        "needs at least one gateway",
    ),
    (
        "a domain allowed and blocked",
        lambda d: with_edge(d)["policies"].update(
            federation={"enabled": True, "allow": ["partner.test"], "block": ["partner.test"]}
        ),
        "policies.federation.allow[0]",
        "partner.test is also blocked",
    ),
    (
        "partner discovery without federation",
        lambda d: d["policies"].update(federation={"partner_discovery": True}),
        "policies.federation.partner_discovery",
        "needs federation enabled",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [pytest.param(m, p, t, id=name) for name, m, p, t in SCHEMA + MEANING],
)
def test_broken_topologies_are_rejected_at_the_right_path(
    mutate: Mutation, path: str, message: str
) -> None:
    doc = base()
    mutate(doc)
    found = problems_of(doc)
    assert any(p.path == path and message in p.message for p in found), found


def test_certificates_in_use_must_cover_every_name(tmp_path: Path) -> None:
    doc = base()
    fe1(doc)["certificate"] = "certs/fe1.crt"
    make_certificate(tmp_path / "certs" / "fe1.crt", ["fe1.example.test"])
    found = problems_of(doc, tmp_path)
    assert [(p.path, p.message) for p in found] == [
        (
            "pools.se1.members[0].certificate",
            f"certificate {tmp_path / 'certs' / 'fe1.crt'} does not cover example.test, "
            "sip.example.test",
        )
    ]
    make_certificate(
        tmp_path / "certs" / "fe1.crt", ["fe1.example.test", "example.test", "sip.example.test"]
    )
    assert problems_of(doc, tmp_path) == []


def test_a_missing_certificate_file_is_an_error(tmp_path: Path) -> None:
    doc = with_edge(base())
    doc["pools"]["edge"]["members"][0]["edge"]["external"]["certificate"] = "public.crt"
    found = problems_of(doc, tmp_path)
    assert len(found) == 1
    assert found[0].path == "pools.edge.members[0].edge.external.certificate"
    assert "public.crt" in found[0].message


def test_warnings_do_not_fail_the_check() -> None:
    doc = enterprise(base())
    doc["pools"]["ee1"]["members"].append(host("ee1-fe2", "10.1.0.2", ["frontend"]))
    doc["organisation"]["sip_domains"].append("example.org")
    topology = topology_from_mapping(doc)
    found = check_topology(topology)
    assert errors(found) == []
    assert {p.path for p in found} == {"pools.ee1.state", "organisation.sip_domains"}
    assert all(p.level == "warning" for p in found)


def test_a_pool_with_shared_state_has_no_warning_and_a_wrong_url_is_an_error() -> None:
    doc = enterprise(base())
    doc["pools"]["ee1"]["members"].append(host("ee1-fe2", "10.1.0.2", ["frontend"]))
    doc["pools"]["ee1"]["state"] = "redis://state.example.test:6379/0"
    assert check_topology(topology_from_mapping(doc)) == []
    doc["pools"]["ee1"]["state"] = "postgresql://db.example.test/x"
    found = check_topology(topology_from_mapping(doc))
    assert [(p.path, p.level) for p in found] == [("pools.ee1.state", "error")]


def test_invalid_toml_names_the_document() -> None:
    with pytest.raises(TopologyError) as raised:
        loads_topology("[organisation\n", source="t.toml")
    assert raised.value.problems[0].path == "(document)"
    assert "invalid TOML" in str(raised.value)


def test_documents_round_trip() -> None:
    doc = with_edge(enterprise(base()))
    doc["policies"]["lockout"]["duration"] = "90s"
    topology = topology_from_mapping(doc)
    again = loads_topology(dumps_toml(doc))
    assert again == topology
    assert loads_topology(dumps_topology(topology)) == topology


def test_the_documented_example_is_a_valid_topology() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "topology.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    topology = loads_topology(block, source="docs/topology.md")
    assert check_topology(topology) == []
    assert {r.name for r in topology.hosts()} >= {"fe-london-1", "edge-london-1", "med1"}
