"""The mistakes a reviewer of a two-site deployment would flag: each rule fires on a
deployment that has the mistake, and stays silent on one that does not."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from conclave.audit.findings import Finding
from conclave.audit.rules import audit_topology
from conclave.pki import create_ca
from conclave.topology import dumps_topology
from conclave.topology.planner import answers_from_mapping, plan
from tests.audit.test_audit import audit_doc, secure_with_edge
from tests.topology.helpers import Doc, enterprise, host, make_certificate

Seed = Callable[[Doc, Path], object]


def _fe1(doc: Doc) -> Doc:
    member: Doc = doc["pools"]["se1"]["members"][0]
    return member


def _high_availability(doc: Doc) -> None:
    doc["requirements"]["high_availability"] = True


def _two_frontends(doc: Doc) -> None:
    """se1 becomes an Enterprise pool of two Front Ends."""
    pool = doc["pools"]["se1"]
    pool.update(
        edition="enterprise",
        fqdn="se1.example.test",
        database="postgresql://conclave@db.example.test/se1",
    )
    pool["members"].append(host("fe2", "10.0.0.2", ["frontend"]))


def _federation(doc: Doc, allow: list[str]) -> None:
    doc["policies"]["federation"] = {"enabled": True, "allow": allow}
    doc["requirements"]["federation"] = True


def _partners(doc: Doc, **extra: object) -> None:
    doc["policies"]["federation"] = {
        "enabled": True, "partners": [{"domain": "partner.test"}], **extra
    }  # fmt: skip
    doc["requirements"]["federation"] = True


def _long_server_certificate(doc: Doc, tmp_path: Path, days: int) -> None:
    names = ["fe1.example.test", "example.test", "sip.example.test"]
    make_certificate(tmp_path / "fe1.crt", names, days=days)
    _fe1(doc)["certificate"] = "fe1.crt"


def _director(doc: Doc) -> None:
    doc["pools"]["dir"] = {
        "site": "hq",
        "edition": "enterprise",
        "fqdn": "dir.example.test",
        "members": [host("dir1", "10.0.0.9", ["director"])],
    }


# (case, seed making the mistake, rule, severity, where)
HAS: list[tuple[str, Seed, str, str, str]] = [
    ("standard edition under high availability",
     lambda d, _: _high_availability(d),
     "POOL-SINGLE-FRONTEND", "medium", "pools.se1.members"),
    ("enterprise pool of one under high availability",
     lambda d, _: (_high_availability(d), enterprise(d)),
     "POOL-SINGLE-FRONTEND", "medium", "pools.ee1.members"),
    ("federation on, allow-list empty",
     lambda d, _: _federation(d, []),
     "FEDERATION-NO-PARTNERS", "medium", "policies.federation.allow"),
    ("a partner without its CA",
     lambda d, _: _partners(d), "FEDERATION-PARTNER-NO-CA", "medium",
     "policies.federation.partners[0].ca"),
    ("partners' DNS may name private addresses",
     lambda d, _: _partners(d, private_addresses=True), "FEDERATION-PRIVATE-ADDRESSES", "high",
     "policies.federation.private_addresses"),
    ("server certificate for 800 days",
     lambda d, t: _long_server_certificate(d, t, 800),
     "CERT-LIFETIME-LONG", "low", "pools.se1.members[0].certificate"),
    ("CA for twenty years",
     lambda _, t: create_ca(t / "ca", common_name="Conclave CA for Example Ltd", days=7300),
     "CERT-LIFETIME-LONG", "low", "files.ca"),
    ("logging controller on the Front End",
     lambda d, _: _fe1(d).update(roles=["frontend", "logging-controller"]),
     "LOGGING-COLLOCATED", "medium", "pools.se1.members[0].roles"),
    ("remote access to an Enterprise pool without a director",
     lambda d, _: enterprise(d),
     "REMOTE-NO-DIRECTOR", "low", "pools"),
]  # fmt: skip

# (case, seed that stays clear of the rule, rule)
HAS_NOT: list[tuple[str, Seed, str]] = [
    ("high availability with two Front Ends",
     lambda d, _: (_high_availability(d), _two_frontends(d)), "POOL-SINGLE-FRONTEND"),
    ("one Front End without high availability",
     lambda d, _: enterprise(d), "POOL-SINGLE-FRONTEND"),
    ("federation with a partner",
     lambda d, _: _federation(d, ["partner.test"]), "FEDERATION-NO-PARTNERS"),
    ("federation off", lambda d, _: None, "FEDERATION-NO-PARTNERS"),
    ("federation with a listed partner", lambda d, _: _partners(d), "FEDERATION-NO-PARTNERS"),
    ("partners' DNS kept public", lambda d, _: _partners(d), "FEDERATION-PRIVATE-ADDRESSES"),
    ("server certificate for a year",
     lambda d, t: _long_server_certificate(d, t, 365), "CERT-LIFETIME-LONG"),
    ("CA for its default lifetime",
     lambda _, t: create_ca(t / "ca", common_name="Conclave CA for Example Ltd"),
     "CERT-LIFETIME-LONG"),
    ("logging controller on a host of its own", lambda d, _: None, "LOGGING-COLLOCATED"),
    ("remote access to an Enterprise pool through a director",
     lambda d, _: (enterprise(d), _director(d)), "REMOTE-NO-DIRECTOR"),
    ("remote access to a Standard Edition server", lambda d, _: None, "REMOTE-NO-DIRECTOR"),
]  # fmt: skip


def _findings(tmp_path: Path, seed: Seed) -> list[Finding]:
    doc = secure_with_edge(tmp_path)
    seed(doc, tmp_path)
    return audit_doc(tmp_path, doc)


@pytest.mark.parametrize(
    ("seed", "rule", "severity", "where"),
    [pytest.param(s, r, sev, w, id=case) for case, s, r, sev, w in HAS],
)
def test_the_mistake_is_found(
    tmp_path: Path, seed: Seed, rule: str, severity: str, where: str
) -> None:
    findings = _findings(tmp_path, seed)
    assert not [f for f in findings if f.rule == "TOPOLOGY-INVALID"], findings
    hits = [f for f in findings if f.rule == rule and f.where.split(": ", 1)[1] == where]
    assert len(hits) == 1, findings
    assert hits[0].level == severity


@pytest.mark.parametrize(("seed", "rule"), [pytest.param(s, r, id=case) for case, s, r in HAS_NOT])
def test_no_finding_without_the_mistake(tmp_path: Path, seed: Seed, rule: str) -> None:
    findings = _findings(tmp_path, seed)
    assert not [f for f in findings if f.rule == "TOPOLOGY-INVALID"], findings
    assert not [f for f in findings if f.rule == rule], findings


def test_findings_name_what_to_look_at(tmp_path: Path) -> None:
    def seed(doc: Doc, _: Path) -> None:
        _high_availability(doc)
        _federation(doc, [])
        _fe1(doc).update(roles=["frontend", "logging-controller"])

    found = {f.rule: f.found for f in _findings(tmp_path, seed)}
    assert "pool se1 has one Front End (fe1)" in found["POOL-SINGLE-FRONTEND"]
    assert (
        "edge edge1 still opens its federation port (TCP 5061)" in found["FEDERATION-NO-PARTNERS"]
    )
    assert found["LOGGING-COLLOCATED"] == (
        "logging controller fe1 also runs frontend, which users reach"
    )


@pytest.mark.parametrize(
    "answers",
    [
        {"domain": "example.test", "users": 300},
        {"domain": "example.test", "users": 300, "federation": True},
        {"domain": "example.test", "users": 300, "remote_access": True},
        {"domain": "example.test", "users": 12_000, "sites": ["london", "paris"],
         "remote_access": True, "federation": True, "partners": ["partner.test"],
         "high_availability": True},
    ],
    ids=["small", "federation-without-partners", "small-remote", "two-sites"],
)  # fmt: skip
def test_the_planner_does_not_write_these_mistakes(
    tmp_path: Path, answers: dict[str, object]
) -> None:
    topology = plan(answers_from_mapping(answers)).topology
    path = tmp_path / "planned.toml"
    path.write_text(dumps_topology(topology), encoding="utf-8")
    rules = {f.rule for f in audit_topology(topology, path, dt.datetime.now(dt.UTC))}
    avoidable = {
        "POOL-SINGLE-FRONTEND",
        "FEDERATION-NO-PARTNERS",
        "LOGGING-COLLOCATED",
        "REMOTE-NO-DIRECTOR",
        "ROLE-UNUSED",
        "LOGGING-NO-CONTROLLER",
        "LOCKOUT-MISSING",
    }
    assert not rules & avoidable, rules
