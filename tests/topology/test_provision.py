"""Provisioning a host's data directory from the topology; the settings ``serve`` applies."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from conclave.config import load_config
from conclave.pki import PkiError, describe, load_certificate
from conclave.topology import check_topology, load_topology
from conclave.topology.checks import errors
from conclave.topology.provision import differences, host_settings, provision, topology_owned
from conclave.topology.publish import firewall_rules

from .helpers import base, enterprise, host, with_edge, write


def test_a_standard_edition_host(tmp_path: Path) -> None:
    doc = base()
    doc["pools"]["se1"]["members"][0]["admin"] = "127.0.0.1:9100"
    doc["policies"]["presence"] = {"enabled": False}
    path = write(tmp_path, doc)
    topology = load_topology(path)
    ref = topology.host("fe1")
    assert ref is not None
    done = provision(topology, path, ref)
    data = tmp_path / "hosts" / "fe1"
    assert done.data_dir == data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert (tmp_path / "ca" / "ca.key").exists() and not (data / "ca" / "ca.key").exists()
    config = load_config(data)
    assert (config.server.domain, config.server.host) == ("example.test", "fe1.example.test")
    assert (config.transports.bind, config.transports.tls_port) == ("10.0.0.1", 5061)
    assert not (config.transports.tcp or config.transports.udp)
    assert config.presence.enabled is False
    assert (config.admin.enabled, config.admin.bind) == (True, "127.0.0.1:9100")
    assert config.logging.controller == "10.0.0.5:6514"
    assert config.logging.controller_name == "log1.example.test"
    assert config.limits.auth_failures_per_minute == 10 and config.limits.ban_seconds == 600
    lockout = config.lockout  # the account lockout follows the same policy
    assert (lockout.threshold, lockout.duration, lockout.directory_threshold) == (10, 600, 50)
    assert config.tls.auto_renew is False  # no CA key on the host
    assert config.database.url == "sqlite:///conclave.db" and (data / "conclave.db").exists()
    info = describe(load_certificate(data / "tls" / "server.crt"))
    assert set(info.dns_names) == {"fe1.example.test", "example.test", "sip.example.test"}
    assert stat.S_IMODE((data / "tls" / "server.key").stat().st_mode) == 0o600
    # The certificate in use now counts for the check, and it covers every name.
    assert errors(check_topology(topology, path)) == []


def test_provisioning_again_changes_nothing_until_the_topology_does(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    topology = load_topology(path)
    ref = topology.host("fe1")
    assert ref is not None
    provision(topology, path, ref)
    fingerprint = describe(load_certificate(tmp_path / "hosts/fe1/tls/server.crt"))
    again = provision(topology, path, ref)
    assert not any("conclave.toml" in a or "issued" in a for a in again.actions)
    doc = base()
    doc["organisation"]["sip_domains"] = ["example.test", "example.org"]
    doc["pools"]["se1"]["members"][0]["ports"] = {"sip_tls": 15061}
    path = write(tmp_path, doc)
    topology = load_topology(path)
    ref = topology.host("fe1")
    assert ref is not None
    changed = provision(topology, path, ref)
    assert "updated conclave.toml" in changed.actions
    assert any(
        "issued the host certificate (not covering example.org" in a for a in changed.actions
    )
    info = describe(load_certificate(tmp_path / "hosts/fe1/tls/server.crt"))
    assert info.sha256_fingerprint != fingerprint.sha256_fingerprint
    assert "sip.example.org" in info.dns_names
    assert load_config(tmp_path / "hosts/fe1").transports.tls_port == 15061


def test_an_expiring_certificate_is_issued_again(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    topology = load_topology(path)
    ref = topology.host("log1")
    assert ref is not None
    provision(topology, path, ref)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=380)
    done = provision(topology, path, ref, now=later)
    assert any("(expiring before)" in a for a in done.actions)


def test_a_data_directory_with_its_own_ca_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    topology = load_topology(path)
    ref = topology.host("fe1")
    assert ref is not None
    own = tmp_path / "hosts" / "fe1" / "ca"
    own.mkdir(parents=True)
    (own / "ca.key").write_text("not ours")
    with pytest.raises(PkiError, match="holds its own CA"):
        provision(topology, path, ref)


def test_roles_not_built_are_not_provisioned(tmp_path: Path) -> None:
    doc = base()
    doc["pools"]["chat"] = {
        "site": "hq", "edition": "enterprise", "members": [host("chat1", "10.0.0.9", ["chat"])]
    }  # fmt: skip
    path = write(tmp_path, doc)
    topology = load_topology(path)
    ref = topology.host("chat1")
    assert ref is not None
    done = provision(topology, path, ref)
    assert "not available yet" in done.skipped
    assert not (tmp_path / "hosts" / "chat1").exists()


def test_a_director_and_the_pools_it_serves(tmp_path: Path) -> None:
    doc = with_edge(enterprise(base()))
    doc["pools"]["dir"] = {
        "site": "hq", "edition": "enterprise", "members": [host("dir1", "10.0.0.9", ["director"])]
    }  # fmt: skip
    path = write(tmp_path, doc)
    topology = load_topology(path)
    director, edge, fe = (topology.host(n) for n in ("dir1", "edge1", "ee1-fe1"))
    assert director is not None and edge is not None and fe is not None
    settings = host_settings(topology, director)["director"]
    assert settings["bind"] == "10.0.0.9"
    # It serves the Enterprise pool (it reads its back end), not the Standard Edition one.
    assert [p["name"] for p in settings["pools"]] == ["ee1"]
    assert settings["pools"][0]["next_hop"] == "10.1.0.1:5061"
    assert settings["pools"][0]["next_hop_name"] == "ee1.example.test"
    edge_settings = host_settings(topology, edge)["edge"]
    assert (edge_settings["next_hop"], edge_settings["next_hop_name"]) == (
        "10.0.0.9:5061", "dir1.example.test"
    )  # fmt: skip
    trust = host_settings(topology, fe)["trust"]
    assert trust["directors"] == ["dir1.example.test"]
    assert trust["director_addresses"] == ["10.0.0.9"]
    assert trust["edge_endpoints"] == ["172.16.0.10:5061"]
    # The Standard Edition pool is not served: check says so (a warning, not an error).
    [unserved] = [p for p in check_topology(topology) if p.path == "pools.se1.database"]
    assert unserved.level == "warning"
    assert "cannot sign in through the edge" in unserved.message


def test_an_edge_and_the_front_ends_that_trust_it(tmp_path: Path) -> None:
    path = write(tmp_path, with_edge(base()))
    topology = load_topology(path)
    edge_ref, fe_ref = topology.host("edge1"), topology.host("fe1")
    assert edge_ref is not None and fe_ref is not None
    done = provision(topology, path, edge_ref)
    assert not done.skipped
    config = load_config(done.data_dir)
    edge = config.edge
    assert (edge.internal_bind, edge.external_bind) == ("172.16.0.10", "203.0.113.10")
    assert (edge.internal_name, edge.external_name) == ("edge1.example.test", "sip.example.test")
    assert edge.remote_users and edge.domains == ("example.test",)
    assert (edge.next_hop, edge.next_hop_name) == ("10.0.0.1:5061", "fe1.example.test")
    assert "fe1.example.test" in edge.inside_peers
    external = describe(load_certificate(done.data_dir / "tls" / "external.crt"))
    assert set(external.dns_names) >= {"sip.example.test"}
    internal = describe(load_certificate(done.data_dir / "tls" / "server.crt"))
    assert "edge1.example.test" in internal.dns_names
    assert not (done.data_dir / "conclave.db").exists()  # an Edge keeps no user data
    trust = host_settings(topology, fe_ref)["trust"]
    assert (trust["edges"], trust["addresses"]) == (["edge1.example.test"], ["172.16.0.10"])
    assert trust["edge_endpoints"] == ["172.16.0.10:5061"] and trust["directors"] == []
    assert not [p for p in check_topology(topology) if p.path == "pools.se1.database"]


def test_settings_for_a_collocated_controller_and_an_enterprise_front_end(tmp_path: Path) -> None:
    doc = base()
    doc["pools"]["se1"]["members"][0]["roles"] = ["frontend", "logging-controller"]
    doc["pools"]["se1"]["members"][0]["ports"] = {"syslog_tls": 16514}
    doc["pools"]["ee"] = {
        "site": "dr",
        "edition": "enterprise",
        "fqdn": "ee.example.test",
        "database": "postgresql://conclave@db.example.test/conclave",
        "transports": ["tls", "tcp"],
        "members": [host("ee-fe1", "10.2.0.1", ["frontend"])],
    }
    doc["policies"]["archiving"] = {"mode": "internal", "critical": False}
    topology = load_topology(write(tmp_path, doc))
    se1, ee = topology.host("fe1"), topology.host("ee-fe1")
    assert se1 is not None and ee is not None
    settings = host_settings(topology, se1)
    assert settings["logging"]["controller"] == "10.0.0.1:16514"  # its own controller
    assert settings["logging_controller"]["listen"] == "10.0.0.1:16514"
    settings = host_settings(topology, ee)
    assert settings["database"]["url"] == "postgresql://conclave@db.example.test/conclave"
    assert settings["transports"]["tcp"] is True
    assert settings["logging"]["controller"] == "10.0.0.1:16514"  # none in dr: the first
    assert settings["archive"] == {
        "enabled": True, "internal": True, "federated": False, "critical": False,
        "site": "dr", "pool": "ee",
    }  # fmt: skip


def test_pool_members_are_told_of_each_other_and_the_shared_state(tmp_path: Path) -> None:
    doc = base()
    doc["pools"]["ee"] = {
        "site": "hq", "edition": "enterprise", "fqdn": "pool.example.test",
        "database": "postgresql://conclave@db.example.test/conclave",
        "state": "redis://state.example.test:6379/0",
        "members": [host("ee-fe1", "10.2.0.1", ["frontend"]),
                    host("ee-fe2", "10.2.0.2", ["frontend"], ports={"sip_tls": 5071})],
    }  # fmt: skip
    topology = load_topology(write(tmp_path, doc))
    fe1 = topology.host("ee-fe1")
    assert fe1 is not None
    assert host_settings(topology, fe1)["pool"] == {
        "redis": "redis://state.example.test:6379/0",
        "key_prefix": "conclave:ee:",
        "members": ["ee-fe2.example.test"],
        "member_endpoints": ["10.2.0.2:5071"],
        "member_names": [],
        "workers": 1,
        "worker_port": 5090,
    }
    standard = topology.host("fe1")
    assert standard is not None
    assert host_settings(topology, standard)["pool"]["redis"] == ""


def test_a_member_running_workers_is_known_worker_by_worker(tmp_path: Path) -> None:
    doc = base()
    fe2 = host("ee-fe2", "10.2.0.2", ["frontend"], ports={"worker_tls": 6000})
    fe2["workers"] = 3
    doc["pools"]["ee"] = {
        "site": "hq", "edition": "enterprise", "fqdn": "pool.example.test",
        "database": "postgresql://conclave@db.example.test/conclave",
        "state": "redis://state.example.test:6379/0",
        "members": [host("ee-fe1", "10.2.0.1", ["frontend"]), fe2],
    }  # fmt: skip
    topology = load_topology(write(tmp_path, doc))
    assert not errors(check_topology(topology))
    fe1, ref2 = topology.host("ee-fe1"), topology.host("ee-fe2")
    assert fe1 is not None and ref2 is not None
    pool = host_settings(topology, fe1)["pool"]
    assert pool["members"] == ["ee-fe2.example.test"] * 3
    assert pool["member_endpoints"] == ["10.2.0.2:6000", "10.2.0.2:6001", "10.2.0.2:6002"]
    assert pool["member_names"] == [f"w{i}.ee-fe2.example.test" for i in range(3)]
    own = host_settings(topology, ref2)["pool"]
    assert (own["workers"], own["worker_port"]) == (3, 6000)
    assert own["member_endpoints"] == ["10.2.0.1:5061"]  # fe1 runs one process
    relays = [r for r in firewall_rules(topology) if r.port in (6000, 6001, 6002)]
    assert len(relays) == 3 * 2  # each worker's port, from each Front End of the pool
    # Workers without the pool state have nothing to share through: refused.
    del doc["pools"]["ee"]["state"]
    found = errors(check_topology(load_topology(write(tmp_path, doc))))
    assert any("pools.ee.members[1].workers" in str(p) for p in found)


def test_serve_lays_the_topology_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    topology = load_topology(path)
    ref = topology.host("fe1")
    assert ref is not None
    provision(topology, path, ref)
    data = tmp_path / "hosts" / "fe1"
    text = (data / "conclave.toml").read_text()
    (data / "conclave.toml").write_text(text.replace("udp = false", "udp = true"))
    on_disk = load_config(data)
    applied = topology_owned(on_disk, topology, ref, source="test")
    assert applied.transports.udp is False
    assert differences(on_disk, applied) == ["transports.udp"]


def test_front_ends_share_the_edges_relay_secret(tmp_path: Path) -> None:
    """With an edge in use, each Front End hands out credentials for the edge's relay,
    signed with the secret coturn's published configuration holds."""
    from conclave.topology.relay import relays_in_use, secret_path, turnserver_conf

    path = write(tmp_path, with_edge(base()))
    topology = load_topology(path)
    ref = topology.host("fe1")
    assert ref is not None
    provision(topology, path, ref)
    data = tmp_path / "hosts" / "fe1"
    relay = load_config(data).media_relay
    assert relay.enabled and relay.servers == ("sip.example.test:3478",)
    shared = secret_path(path)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600
    copy = data / relay.secret_file
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    secret = copy.read_text().strip()
    assert secret == shared.read_text().strip() and len(secret) == 64
    [edge] = relays_in_use(topology)
    conf = turnserver_conf(topology, edge, secret)
    assert f"static-auth-secret={secret}\n" in conf and "use-auth-secret\n" in conf
    assert "listening-ip=203.0.113.10\n" in conf and "\nallow-loopback-peers" not in conf
    assert "denied-peer-ip=10.0.0.0-10.255.255.255\n" in conf

    # Without an edge in use there is no relay to hand out.
    (tmp_path / "plain").mkdir()
    alone = load_topology(write(tmp_path / "plain", base()))
    fe1 = alone.host("fe1")
    assert fe1 is not None
    assert host_settings(alone, fe1)["media_relay"] == {"enabled": False, "servers": []}


def test_the_topology_turns_the_web_face_and_the_console_on(tmp_path: Path) -> None:
    doc = base()
    doc["pools"]["se1"]["web"] = True
    member = doc["pools"]["se1"]["members"][0]
    member.update(admin="127.0.0.1:9100", console=True, ports={"web_https": 8443, "web_crl": 8080})
    doc["policies"]["administrators"] = ["admin"]
    path = write(tmp_path, doc)
    topology = load_topology(path)
    assert errors(check_topology(topology)) == []
    ref = topology.host("fe1")
    assert ref is not None
    provision(topology, path, ref)
    config = load_config(tmp_path / "hosts" / "fe1")
    assert config.web.enabled and config.transports.ws
    assert (config.web.bind, config.web.crl_bind) == ("10.0.0.1:8443", "10.0.0.1:8080")
    assert config.admin.console and config.admin.admins == ("admin",)
    # The firewall plan opens exactly the web face's two ports on the Front End.
    opened = {
        (r.port, r.purpose.split(":")[0], r.source_zone)
        for r in firewall_rules(topology)
        if "fe1" in r.destination
    }
    assert {(8443, "HTTPS", "internal"), (8080, "HTTP", "internal")} <= opened


def test_the_web_face_needs_a_front_end_with_tls_and_the_console_an_admin_interface(
    tmp_path: Path,
) -> None:
    doc = base()
    doc["pools"]["se1"]["web"] = True
    doc["pools"]["se1"]["transports"] = ["tcp"]
    doc["pools"]["se1"]["members"][0]["console"] = True
    found = {(p.path, p.level) for p in check_topology(load_topology(write(tmp_path, doc)))}
    assert ("pools.se1.web", "error") in found
    assert ("pools.se1.members[0].console", "error") in found
    assert ("policies.administrators", "warning") in found
