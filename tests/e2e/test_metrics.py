"""Prometheus metrics, /health and /ready on a real `conclave serve` as traffic flows."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import SipClient, digest_header

REG_URI = "sip:localhost"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def admin_port(server: ConclaveServer) -> int:
    return int(server.wait_for(lambda e: e.get("event") == "admin listening")["port"])


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(port: int) -> Samples:
    status, content_type, body = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def register(client: SipClient, user: str, password: str) -> int:
    to = f"sip:{user}@localhost"
    first = client.send("REGISTER", REG_URI, from_user=user, to=to, headers=["Expires: 600"])
    assert first.status == 401
    auth = digest_header(first, user=user, password=password, method="REGISTER", uri=REG_URI)
    final = client.send("REGISTER", REG_URI, from_user=user, to=to, headers=["Expires: 600", auth])
    return final.status


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(
        transports="tls,udp",
        config={"admin": {"enabled": True}, "limits": {"auth_failures_per_minute": 2}},
    )


def test_counters_move_as_traffic_flows(server: ConclaveServer) -> None:
    port = admin_port(server)
    before = scrape(port)
    udp = SipClient("udp", server.ports["udp"])
    for _ in range(3):
        assert udp.send("OPTIONS", REG_URI, from_user="alice").status == 200
    assert register(udp, "alice", PASSWORDS["alice"]) == 200
    tls = SipClient("tls", server.ports["tls"], ca=str(server.ca))
    assert tls.send("OPTIONS", REG_URI, from_user="bob").status == 200
    after = scrape(port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("conclave_sip_requests_total", method="OPTIONS") == 4
    assert moved("conclave_sip_requests_total", method="REGISTER") == 2
    assert moved("conclave_sip_responses_total", method="OPTIONS", **{"class": "2xx"}) == 4
    assert moved("conclave_sip_responses_total", method="REGISTER", **{"class": "4xx"}) == 1
    assert moved("conclave_sip_responses_total", method="REGISTER", **{"class": "2xx"}) == 1
    assert moved("conclave_sip_transaction_seconds_count", method="OPTIONS") == 4
    assert moved("conclave_sip_transaction_seconds_bucket", method="OPTIONS", le="+Inf") == 4
    assert value(after, "conclave_registrations") == 1
    assert value(after, "conclave_connections") == 1  # the TLS client
    assert value(after, "conclave_subscriptions") == 0
    # The certificate `conclave init` issued is good for about two years.
    assert 300 < value(after, "conclave_tls_certificate_expiry_days") < 1000
    tls.close()


def test_authentication_failures_and_lockout(server: ConclaveServer) -> None:
    port = admin_port(server)
    before = scrape(port)
    client = SipClient("udp", server.ports["udp"])
    # Two failures are tolerated per minute (the config above); the third locks out.
    for _ in range(3):
        assert register(client, "alice", "wrong-password-1234") == 401
    server.wait_for(
        lambda e: e.get("event") == "source banned" and e.get("reason") == "authentication failures"
    )
    after = scrape(port)
    assert value(after, "conclave_auth_failures_total") - value(
        before, "conclave_auth_failures_total"
    ) == (3)
    assert value(after, "conclave_auth_lockouts_total") == value(
        before, "conclave_auth_lockouts_total"
    ) + (1)


def test_a_flood_is_counted_as_a_ban(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(
        transports="tls,udp",
        config={"admin": {"enabled": True}, "limits": {"requests_per_second": 5, "burst": 10}},
    )
    port = admin_port(server)
    before = value(scrape(port), "conclave_source_bans_total")
    client = SipClient("udp", server.ports["udp"])
    for _ in range(40):
        client.send_raw(client.request("OPTIONS", REG_URI, from_user="alice"))
    server.wait_for(lambda e: e.get("event") == "source banned")
    assert value(scrape(port), "conclave_source_bans_total") == before + 1


def test_health_and_ready(server: ConclaveServer) -> None:
    port = admin_port(server)
    assert get(port, "/health")[0] == 200
    status, content_type, body = get(port, "/ready")
    assert status == 200 and content_type == "application/json"
    ready: dict[str, Any] = json.loads(body)
    assert ready == {"ready": True, "checks": {"listeners": True, "database": True}}
    assert get(port, "/nothing")[0] == 404


def test_admin_listener_is_off_by_default(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(transports="tls,udp")
    server.drain()
    assert not server.events("admin listening")
