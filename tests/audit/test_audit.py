"""``conclave audit``: every seeded misconfiguration is found; secure set-ups are clean."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conclave.audit import RULES, run_audit
from conclave.audit.findings import Finding, failing
from conclave.audit.live import listening_sockets
from conclave.audit.passwords import candidates, weak_passwords
from conclave.audit.tls import policy_findings, tls_versions
from conclave.cli import main
from conclave.config import load_config
from conclave.pki import create_ca
from conclave.store.database import Database
from conclave.store.passwords import password_policy_problems
from conclave.store.users import UserStore
from conclave.topology.document import topology_from_mapping
from conclave.topology.provision import provision
from tests.topology.helpers import Doc, base, enterprise, host, make_certificate, with_edge, write

DOCS = Path(__file__).resolve().parents[2] / "docs" / "audit-rules.md"


def audit_doc(tmp_path: Path, doc: Doc) -> list[Finding]:
    return run_audit(write(tmp_path, doc)).findings


def public_certificate(tmp_path: Path) -> str:
    """An external certificate for the edge from a CA that is not ours (a stand-in public CA)."""
    public = create_ca(tmp_path / "public-ca", common_name="Stand-in Public CA")
    issued = public.issue_server(["sip.example.test"])
    issued.write(tmp_path / "edge-public.crt", tmp_path / "edge-public.key")
    return "edge-public.crt"


def secure_with_edge(tmp_path: Path) -> Doc:
    doc = with_edge(base())
    doc["pools"]["edge"]["members"][0]["edge"]["external"]["certificate"] = public_certificate(
        tmp_path
    )
    return doc


def test_secure_topologies_have_nothing_high(tmp_path: Path) -> None:
    for doc in (base(), secure_with_edge(tmp_path)):
        findings = audit_doc(tmp_path, doc)
        assert not failing(findings), findings
        assert {f.rule for f in findings} <= {"DIGEST-MD5", "PASSWORD-UNVERIFIABLE"}


Mutation = Callable[[Doc, Path], object]


def _fe1(doc: Doc) -> Doc:
    member: Doc = doc["pools"]["se1"]["members"][0]
    return member


def _edge(doc: Doc) -> Doc:
    member: Doc = doc["pools"]["edge"]["members"][0]
    return member


def _weak_key(doc: Doc, tmp_path: Path) -> None:
    names = ["fe1.example.test", "example.test", "sip.example.test"]
    make_certificate(tmp_path / "weak.crt", names, key="rsa", bits=1024)
    _fe1(doc)["certificate"] = "weak.crt"


def _expiring(doc: Doc, tmp_path: Path) -> None:
    names = ["fe1.example.test", "example.test", "sip.example.test"]
    make_certificate(tmp_path / "soon.crt", names, days=5)
    _fe1(doc)["certificate"] = "soon.crt"


def _expired(doc: Doc, tmp_path: Path) -> None:
    names = ["fe1.example.test", "example.test", "sip.example.test"]
    make_certificate(tmp_path / "old.crt", names, days=-1)
    _fe1(doc)["certificate"] = "old.crt"


def _self_signed_edge(doc: Doc, tmp_path: Path) -> None:
    make_certificate(tmp_path / "self.crt", ["sip.example.test"])
    _edge(doc)["edge"]["external"]["certificate"] = "self.crt"


def _internal_ca_edge(doc: Doc, tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", common_name="Conclave CA for Example Ltd")
    ca.issue_server(["sip.example.test"]).write(tmp_path / "int.crt", tmp_path / "int.key")
    _edge(doc)["edge"]["external"]["certificate"] = "int.crt"


def _unused_director(doc: Doc, _tmp_path: Path) -> None:
    director = host("dir1", "10.0.0.9", ["director"])
    doc["pools"]["dir"] = {"site": "hq", "edition": "enterprise", "members": [director]}
    doc["policies"]["external_access"] = {"remote_users": False}


INSECURE: list[tuple[str, Mutation, str, str, str]] = [
    # (case, seed, rule, severity, where the finding points)
    ("udp", lambda d, _: d["pools"]["se1"].update(transports=["tls", "udp"]),
     "TRANSPORT-PLAIN", "high", "pools.se1.transports"),
    ("tcp", lambda d, _: d["pools"]["se1"].update(transports=["tls", "tcp"]),
     "TRANSPORT-PLAIN", "high", "pools.se1.transports"),
    ("federation open", lambda d, _: d["policies"].update(
        federation={"enabled": True, "open": True}),
     "FEDERATION-OPEN", "high", "policies.federation.open"),
    ("partner discovery", lambda d, _: d["policies"].update(
        federation={"enabled": True, "partner_discovery": True}),
     "FEDERATION-DISCOVERY", "high", "policies.federation.partner_discovery"),
    ("no lockout", lambda d, _: d["policies"].pop("lockout"),
     "LOCKOUT-MISSING", "medium", "policies.lockout"),
    ("lockout at the directory's", lambda d, _: d["policies"]["lockout"].update(
        threshold=50), "LOCKOUT-ABOVE-DIRECTORY", "high", "policies.lockout.threshold"),
    ("lockout too lax", lambda d, _: d["policies"]["lockout"].update(
        threshold=500, directory_threshold=0), "LOCKOUT-WEAK", "high",
     "policies.lockout.threshold"),
    ("ban too short", lambda d, _: d["policies"]["lockout"].update(duration="5s"),
     "LOCKOUT-WEAK", "high", "policies.lockout.duration"),
    ("weak key", _weak_key, "TLS-WEAK", "high", "pools.se1.members[0].certificate"),
    ("expiring", _expiring, "CERT-EXPIRING", "high", "pools.se1.members[0].certificate"),
    ("expired", _expired, "CERT-EXPIRED", "critical", "pools.se1.members[0].certificate"),
    ("self-signed edge", _self_signed_edge, "EDGE-CERT-UNTRUSTED", "high",
     "pools.edge.members[0].edge.external.certificate"),
    ("internal CA on the edge", _internal_ca_edge, "EDGE-CERT-UNTRUSTED", "high",
     "pools.edge.members[0].edge.external.certificate"),
    ("edge without external certificate", lambda d, _: _edge(d)["edge"]["external"].pop(
        "certificate"), "EDGE-CERT-MISSING", "medium",
     "pools.edge.members[0].edge.external.certificate"),
    ("edge extra port", lambda d, _: _edge(d).update(extra_ports=[
        {"protocol": "tcp", "port": 22, "interface": "external", "purpose": "ssh"}]),
     "EDGE-EXTRA-PORTS", "high", "pools.edge.members[0].extra_ports[0]"),
    ("edge admin", lambda d, _: _edge(d).update(admin="127.0.0.1:9100"),
     "EDGE-EXTRA-PORTS", "high", "pools.edge.members[0].admin"),
    ("unpaired enterprise pool", lambda d, _: enterprise(d),
     "POOL-UNPAIRED", "medium", "pools.ee1.paired_with"),
    ("unpaired pool, high availability required", lambda d, _: enterprise(d)[
        "requirements"].update(high_availability=True),
     "POOL-UNPAIRED", "high", "pools.ee1.paired_with"),
    ("no logging controller", lambda d, _: d["pools"].pop("logs"),
     "LOGGING-NO-CONTROLLER", "medium", "pools"),
    ("archiving off under compliance", lambda d, _: d["requirements"].update(
        compliance_archiving=True), "ARCHIVING-OFF-COMPLIANCE", "high",
     "policies.archiving.mode"),
    ("archiving not critical", lambda d, _: (
        d["requirements"].update(compliance_archiving=True),
        d["policies"].update(archiving={"mode": "all", "critical": False})),
     "ARCHIVING-NOT-CRITICAL", "medium", "policies.archiving.critical"),
    ("anonymous users", lambda d, _: d["policies"].update(anonymous_users=True),
     "ANONYMOUS-ACCESS", "high", "policies.anonymous_users"),
    ("admin beyond loopback", lambda d, _: _fe1(d).update(admin="10.0.0.1:9100"),
     "ADMIN-EXPOSED", "high", "pools.se1.members[0].admin"),
    ("unused edge", lambda d, _: d["policies"].update(external_access={"remote_users": False}),
     "ROLE-UNUSED", "medium", "pools.edge.members[0].roles"),
    ("unused director", _unused_director, "ROLE-UNUSED", "medium",
     "pools.dir.members[0].roles"),
    ("federation not required", lambda d, _: d["policies"].update(
        federation={"enabled": True, "allow": ["partner.test"]}),
     "FEATURE-UNNEEDED", "medium", "policies.federation.enabled"),
    ("public IM", lambda d, _: d["policies"].update(
        federation={"enabled": True, "allow": ["partner.test"]},
        external_access={"remote_users": True, "public_im": True}),
     "PUBLIC-IM", "medium", "policies.external_access.public_im"),
    ("file transfer unfiltered", lambda d, _: d["policies"].update(file_transfer="on"),
     "FILE-TRANSFER-UNFILTERED", "medium", "policies.file_transfer"),
    ("no requirements", lambda d, _: d.pop("requirements"),
     "REQUIREMENTS-MISSING", "low", "requirements"),
    ("invalid topology", lambda d, _: d["pools"]["se1"].update(site="nowhere"),
     "TOPOLOGY-INVALID", "high", "pools.se1.site"),
    ("plain gateway", lambda d, _: d["pools"].update(med={
        "site": "hq", "edition": "enterprise", "fqdn": "med.example.test",
        "gateways": [{"fqdn": "gw.example.test", "transport": "tcp", "port": 5060}],
        "members": [host("med1", "10.0.0.8", ["mediation"])]}),
     "TRANSPORT-PLAIN", "high", "pools.med.gateways[0].transport"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("seed", "rule", "severity", "where"),
    [pytest.param(s, r, sev, w, id=case) for case, s, r, sev, w in INSECURE],
)
def test_each_seeded_misconfiguration_is_found(
    tmp_path: Path, seed: Mutation, rule: str, severity: str, where: str
) -> None:
    doc = secure_with_edge(tmp_path)
    seed(doc, tmp_path)
    findings = audit_doc(tmp_path, doc)
    hits = [f for f in findings if f.rule == rule and f.where.endswith(": " + where)]
    assert hits, [(f.rule, f.where) for f in findings]
    assert hits[0].level == severity
    assert failing(findings) == any(f.level in ("high", "critical") for f in findings)


def test_every_finding_carries_id_severity_what_where_why_and_fix(tmp_path: Path) -> None:
    doc = secure_with_edge(tmp_path)
    doc["pools"]["se1"]["transports"] = ["tls", "udp"]
    [finding] = [f for f in audit_doc(tmp_path, doc) if f.rule == "TRANSPORT-PLAIN"]
    data = finding.to_json()
    assert set(data) == {"id", "severity", "title", "found", "where", "why", "fix"}
    assert all(data.values())
    assert data["found"] == "pool se1 accepts plain SIP over UDP"


def test_the_rules_page_documents_every_rule() -> None:
    text = DOCS.read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `([A-Z0-9-]+)` \| (\w+) \|", text, re.MULTILINE))
    assert documented == {rule.id: rule.severity for rule in RULES.values()}


# --- data directories ------------------------------------------------------------------


@pytest.fixture
def default_install(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    result = CliRunner().invoke(main, ["init", "--domain", "example.test", "--dir", str(data)])
    assert result.exit_code == 0, result.output
    added = CliRunner().invoke(
        main,
        ["user", "add", "alice", "--dir", str(data), "--password-stdin"],
        input="Wonder-Land-123456\n",
    )
    assert added.exit_code == 0, added.output
    return data


def test_the_default_install_has_nothing_high(default_install: Path) -> None:
    findings = run_audit(data_dirs=[default_install]).findings
    assert not failing(findings), findings
    assert {f.rule for f in findings} == {
        "DIGEST-MD5",
        "LOGGING-NO-CONTROLLER",
        "PASSWORD-UNVERIFIABLE",
    }


def _patch(data: Path, old: str, new: str) -> None:
    path = data / "conclave.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


DATA_SEEDS: list[tuple[str, str, str, str]] = [
    ("udp = false", "udp = true", "TRANSPORT-PLAIN", "transports.udp"),
    ("tcp = false", "tcp = true", "TRANSPORT-PLAIN", "transports.tcp"),
    (
        'enabled = false\n# host:port to listen on; port 0 picks a free port\nbind = "127.0.0.1:0"',
        'enabled = true\n# host:port to listen on; port 0 picks a free port\nbind = "0.0.0.0:9100"',
        "ADMIN-EXPOSED",
        "admin.bind",
    ),
    ('ban_seconds = "10m"', 'ban_seconds = "5s"', "LOCKOUT-WEAK", "limits.ban_seconds"),
    (
        "auth_failures_per_minute = 10",
        "auth_failures_per_minute = 1000",
        "LOCKOUT-WEAK",
        "limits.auth_failures_per_minute",
    ),
]


@pytest.mark.parametrize(("old", "new", "rule", "key"), DATA_SEEDS)
def test_data_directory_misconfigurations(
    default_install: Path, old: str, new: str, rule: str, key: str
) -> None:
    _patch(default_install, old, new)
    findings = run_audit(data_dirs=[default_install]).findings
    assert any(f.rule == rule and f.where.endswith(key) for f in findings), findings
    assert failing(findings)


def test_readable_private_keys_are_found(default_install: Path) -> None:
    os.chmod(default_install / "tls" / "server.key", 0o644)
    findings = run_audit(data_dirs=[default_install]).findings
    assert [f.where for f in findings if f.rule == "DATA-PERMISSIONS"] == [
        str(default_install / "tls" / "server.key")
    ]


def test_a_broken_config_is_one_finding(default_install: Path) -> None:
    _patch(default_install, "udp = false", "udp = 3")
    findings = run_audit(data_dirs=[default_install]).findings
    assert [f.rule for f in findings] == ["CONFIG-INVALID"]
    assert "transports.udp: must be true or false" in findings[0].found


def test_users_with_guessable_passwords_are_found(default_install: Path) -> None:
    # The CLI enforces the policy; a user added behind its back (a script, an import)
    # may not meet it. Only the hash is stored, so the audit finds it by guessing.
    config = load_config(default_install)

    async def add() -> None:
        async with Database(config.database_url(default_install)) as db:
            await UserStore(db).add("bob", "example.test", "bob2025")
            await UserStore(db).add("carol", "example.test", "Correct-Horse-Battery-9")

    asyncio.run(add())
    findings = run_audit(data_dirs=[default_install]).findings
    weak = [f for f in findings if f.rule == "PASSWORD-POLICY"]
    assert [f.where for f in weak] == [f"user bob@example.test in {default_install}"]
    assert "bob2025" not in weak[0].found  # the password itself is never printed
    [note] = [f for f in findings if f.rule == "PASSWORD-UNVERIFIABLE"]
    assert "3 enabled user(s)" in note.found


def test_candidates_all_fail_the_policy() -> None:
    tried = candidates("alice", "example.test")
    assert len(tried) > 50
    assert all(password_policy_problems(p, user="alice") for _kind, p in tried)
    ha1 = hashlib.sha256(b"alice:example.test:Alice123").hexdigest()
    assert [w.kind for w in weak_passwords([("alice", "example.test", ha1)])] == ["user name"]


def test_a_provisioned_topology_is_audited_with_its_hosts(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    topology = topology_from_mapping(base())
    for ref in topology.hosts():
        provision(topology, path, ref)
    report = run_audit(path)
    assert str(tmp_path / "hosts" / "fe1") in report.audited
    assert str(tmp_path / "hosts" / "log1") in report.audited
    assert not report.failed, report.findings
    # the data directory follows the topology's lockout, which is below the directory's 50
    _patch(
        tmp_path / "hosts" / "fe1", "auth_failures_per_minute = 10", "auth_failures_per_minute = 60"
    )
    findings = run_audit(path).findings
    assert any(f.rule == "LOCKOUT-ABOVE-DIRECTORY" and "hosts/fe1" in f.where for f in findings)


# --- TLS policy and the running deployment -----------------------------------------------


def test_the_tls_policy_is_current() -> None:
    assert tls_versions() == ["TLS 1.2", "TLS 1.3"]
    assert policy_findings() == []


def test_listening_sockets_of_a_process() -> None:
    with socket.socket() as listener, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        udp.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        found = listening_sockets(os.getpid())
        assert found is not None
        assert any(s.protocol == "tcp" and s.port == port for s in found)


def test_now_is_respected(tmp_path: Path) -> None:
    doc = base()
    names = ["fe1.example.test", "example.test", "sip.example.test"]
    make_certificate(tmp_path / "c.crt", names, days=100)
    doc["pools"]["se1"]["members"][0]["certificate"] = "c.crt"
    path = write(tmp_path, doc)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=80)
    assert any(f.rule == "CERT-EXPIRING" for f in run_audit(path, now=later).findings)
    assert not any(f.rule == "CERT-EXPIRING" for f in run_audit(path).findings)


def test_a_running_server_listening_beyond_its_config_is_found(default_install: Path) -> None:
    # A stand-in server process: "conclave" in its command line, its pid beside the data,
    # listening on the TLS port the config names and on one port nobody configured.
    script = (
        "import socket, sys\n"
        "a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen()\n"
        "b = socket.socket(); b.bind(('127.0.0.1', 0)); b.listen()\n"
        "print(a.getsockname()[1], b.getsockname()[1], flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "conclave"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        configured, extra = (int(p) for p in proc.stdout.readline().split())
        _patch(default_install, "tls_port = 5061", f"tls_port = {configured}")
        (default_install / "conclave.pid").write_text(f"{proc.pid}\n")
        findings = run_audit(data_dirs=[default_install]).findings
        unexpected = [f for f in findings if f.rule == "PORT-UNEXPECTED"]
        assert len(unexpected) == 1
        assert f"TCP 127.0.0.1:{extra}" in unexpected[0].found
        assert unexpected[0].where == f"{default_install} (pid {proc.pid})"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_an_edge_whose_internal_side_faces_the_internet(default_install: Path) -> None:
    _patch(default_install, 'internal_bind = "127.0.0.1"', 'internal_bind = "0.0.0.0"')
    from conclave.audit.deployment import audit_data_dir

    now = dt.datetime.now(dt.UTC)
    findings = audit_data_dir(default_install, roles=("edge",), now=now, check_users=False)
    [exposed] = [f for f in findings if f.rule == "EDGE-INTERNAL-EXPOSED"]
    assert exposed.where.endswith("edge.internal_bind") and "0.0.0.0" in exposed.found
    quiet = audit_data_dir(default_install, roles=("frontend",), now=now, check_users=False)
    assert not [f for f in quiet if f.rule == "EDGE-INTERNAL-EXPOSED"]
