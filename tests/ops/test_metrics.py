"""The process's Prometheus registry: names, bounded labels, state gauges."""

from __future__ import annotations

import datetime as dt

from prometheus_client.parser import text_string_to_metric_families

from conclave.ops import metrics
from conclave.ops.metrics import REGISTRY, StateGauges


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_and_responses_are_counted_by_method_and_class() -> None:
    before = sample("conclave_sip_requests_total", method="OPTIONS")
    metrics.count_request("OPTIONS")
    metrics.count_request("OPTIONS")
    assert sample("conclave_sip_requests_total", method="OPTIONS") == before + 2
    before = sample("conclave_sip_responses_total", method="REGISTER", **{"class": "4xx"})
    metrics.count_response("REGISTER", 401)
    metrics.count_response("REGISTER", 423)
    assert sample("conclave_sip_responses_total", method="REGISTER", **{"class": "4xx"}) == (
        before + 2
    )


def test_odd_methods_share_one_label() -> None:
    before = sample("conclave_sip_requests_total", method="OTHER")
    for i in range(500):
        metrics.count_request(f"FLOOD{i}")
    assert sample("conclave_sip_requests_total", method="OTHER") == before + 500
    methods = {
        s.labels["method"]
        for family in REGISTRY.collect()
        if family.name == "conclave_sip_requests"
        for s in family.samples
    }
    assert methods <= metrics.METHODS | {"OTHER"}


def test_latency_histogram() -> None:
    before = sample("conclave_sip_transaction_seconds_count", method="MESSAGE")
    metrics.observe_transaction("MESSAGE", 0.003)
    assert sample("conclave_sip_transaction_seconds_count", method="MESSAGE") == before + 1
    assert sample("conclave_sip_transaction_seconds_bucket", method="MESSAGE", le="0.005") >= 1


def test_state_gauges_read_live_values_and_detach() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    gauges = StateGauges(clock=lambda: now)
    value = {"n": 3}
    owner = object()
    gauges.attach(
        owner,
        registrations=lambda: value["n"],
        connections=lambda: 1,
        certificate_expiry=lambda: now + dt.timedelta(days=12, hours=12),
    )
    got = {m.name: m.samples[0].value for m in gauges.collect()}
    assert got == {
        "conclave_registrations": 3,
        "conclave_connections": 1,
        "conclave_tls_certificate_expiry_days": 12.5,
    }
    value["n"] = 5
    assert {m.name: m.samples[0].value for m in gauges.collect()}["conclave_registrations"] == 5
    gauges.detach(owner)
    assert list(gauges.collect()) == []


def test_a_failing_source_does_not_break_the_scrape() -> None:
    gauges = StateGauges()
    gauges.attach(object(), subscriptions=lambda: 1 / 0)
    (family,) = gauges.collect()
    assert family.name == "conclave_subscriptions" and family.samples[0].value != 0


def test_render_parses_with_the_prometheus_parser() -> None:
    metrics.ARCHIVE_FAILURES.inc()
    metrics.ARCHIVE_WRITE_SECONDS.observe(0.002)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    for name in (
        "conclave_sip_requests",
        "conclave_sip_transaction_seconds",
        "conclave_auth_failures",
        "conclave_auth_lockouts",
        "conclave_source_bans",
        "conclave_archive_write_seconds",
        "conclave_archive_failures",
        "conclave_log_events_dropped",
    ):
        assert name in names, name
