"""What the logging controller believes about an agent: who it is, and its events' fields."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from conclave.ops.controller import (
    MAX_CLOCK_AHEAD,
    AgentHost,
    AgentIdentity,
    agent_identity,
    vouch,
)
from conclave.pki import CertificateAuthority, IssuedCertificate, PkiError, create_ca
from conclave.pki.identity import server_identity

TOPOLOGY = (
    AgentHost("fe1.example.test", ("standard",)),
    AgentHost("fe2.example.test", ("frontend", "logging-controller")),
)
NOW = 1_750_000_000.0
RETENTION = 30 * 86400.0


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return create_ca(tmp_path_factory.mktemp("controller-ca") / "ca", common_name="Test CA")


def der(issued: IssuedCertificate) -> bytes:
    return issued.certificate.public_bytes(serialization.Encoding.DER)


def test_a_users_client_certificate_is_not_an_agent(ca: CertificateAuthority) -> None:
    alice = der(ca.issue_client("alice", "example.test"))
    with pytest.raises(PkiError, match="no serverAuth"):
        agent_identity(alice, None)
    with pytest.raises(PkiError, match="no serverAuth"):
        agent_identity(alice, TOPOLOGY)
    with pytest.raises(PkiError, match="no certificate"):
        agent_identity(None, None)


def test_a_server_certificate_must_name_a_topology_host(ca: CertificateAuthority) -> None:
    fe1 = agent_identity(der(ca.issue_server(["fe1.example.test", "example.test"])), TOPOLOGY)
    assert [h.name for h in fe1.hosts] == ["fe1.example.test"]
    with pytest.raises(PkiError, match=r"\(stranger.example.test\) names no host"):
        agent_identity(der(ca.issue_server(["stranger.example.test"])), TOPOLOGY)
    # A wildcard stands for no particular host.
    with pytest.raises(PkiError, match="names no host"):
        agent_identity(der(ca.issue_server(["*.example.test"])), TOPOLOGY)
    # Without a topology every name in a server certificate is one of its hosts.
    standalone = agent_identity(der(ca.issue_server(["example.test"], ["127.0.0.1"])), None)
    assert [(h.name, h.roles) for h in standalone.hosts] == [
        ("example.test", ("standard",)),
        ("127.0.0.1", ("standard",)),
    ]


def test_server_identity_reports_names_common_name_first(ca: CertificateAuthority) -> None:
    issued = ca.issue_server(["sip.example.test", "Fe1.Example.Test"], ["::1"])
    identity = server_identity(der(issued))
    assert identity.dns == ("sip.example.test", "fe1.example.test")
    assert identity.ips == ("::1",)
    assert identity.serial == issued.serial
    assert identity.names_exactly("FE1.example.test.") and identity.names_exactly("0::1")
    assert not identity.names_exactly("x.sip.example.test")


def event(**fields: Any) -> dict[str, Any]:
    base = {
        "event": "register",
        "host": "fe1.example.test",
        "role": "standard",
        "time": dt.datetime.fromtimestamp(NOW - 60, dt.UTC).isoformat(),
    }
    return {**base, **fields}


def identity_of(ca: CertificateAuthority, *names: str) -> AgentIdentity:
    return agent_identity(der(ca.issue_server(list(names))), TOPOLOGY)


def test_an_honest_event_is_kept_as_sent(ca: CertificateAuthority) -> None:
    fe1 = identity_of(ca, "fe1.example.test")
    honest = event()
    assert vouch(honest, fe1, now=NOW, oldest=NOW - RETENTION) == []
    assert honest == event()


def test_host_and_role_come_from_the_certificate_and_topology(ca: CertificateAuthority) -> None:
    fe1 = identity_of(ca, "fe1.example.test")
    forged = event(host="fe2.example.test", role="logging-controller")
    assert vouch(forged, fe1, now=NOW, oldest=NOW - RETENTION) == ["host", "role"]
    assert (forged["host"], forged["role"]) == ("fe1.example.test", "standard")
    assert (forged["claimed_host"], forged["claimed_role"]) == (
        "fe2.example.test",
        "logging-controller",
    )
    # A role the host has is believed; one it has not is replaced by its first.
    fe2 = identity_of(ca, "fe2.example.test")
    as_controller = event(host="fe2.example.test", role="logging-controller")
    assert vouch(as_controller, fe2, now=NOW, oldest=NOW - RETENTION) == []
    as_edge = event(host="fe2.example.test", role="edge")
    assert vouch(as_edge, fe2, now=NOW, oldest=NOW - RETENTION) == ["role"]
    assert as_edge["role"] == "frontend"
    # Missing fields are filled in, with nothing to keep as a claim.
    bare: dict[str, Any] = {"event": "x", "time": event()["time"]}
    assert vouch(bare, fe1, now=NOW, oldest=NOW - RETENTION) == ["host", "role"]
    assert (bare["host"], bare["role"]) == ("fe1.example.test", "standard")
    assert "claimed_host" not in bare and "claimed_role" not in bare


@pytest.mark.parametrize(
    "claimed",
    [
        dt.datetime.fromtimestamp(NOW + MAX_CLOCK_AHEAD + 1, dt.UTC).isoformat(),
        "2099-01-01T00:00:00Z",
        dt.datetime.fromtimestamp(NOW - RETENTION - 1, dt.UTC).isoformat(),
        "1970-01-01T00:00:00Z",
        "yesterday",
    ],
)
def test_times_outside_the_window_are_clamped_to_arrival(
    ca: CertificateAuthority, claimed: str
) -> None:
    fe1 = identity_of(ca, "fe1.example.test")
    forged = event(time=claimed)
    assert vouch(forged, fe1, now=NOW, oldest=NOW - RETENTION) == ["time"]
    assert forged["claimed_time"] == claimed
    assert dt.datetime.fromisoformat(forged["time"]).timestamp() == NOW


def test_times_inside_the_window_are_kept(ca: CertificateAuthority) -> None:
    fe1 = identity_of(ca, "fe1.example.test")
    for offset in (MAX_CLOCK_AHEAD - 1, -RETENTION + 1, 0):
        when = dt.datetime.fromtimestamp(NOW + offset, dt.UTC).isoformat()
        kept = event(time=when)
        assert vouch(kept, fe1, now=NOW, oldest=NOW - RETENTION) == []
        assert kept["time"] == when


def test_runtime_builds_agent_hosts_from_a_topology() -> None:
    from conclave.ops.runtime import agent_hosts
    from conclave.topology.document import topology_from_mapping
    from tests.topology.helpers import base, enterprise

    hosts = agent_hosts(topology_from_mapping(enterprise(base())))
    assert hosts == (
        AgentHost("fe1.example.test", ("standard",)),  # a Standard Edition Front End
        AgentHost("log1.example.test", ("logging-controller",)),
        AgentHost("ee1-fe1.example.test", ("frontend",)),
    )
