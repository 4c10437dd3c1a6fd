"""Prometheus metrics for one process, served at ``/metrics`` on the admin listener.

Every metric lives in :data:`REGISTRY`, this process's own
:class:`~prometheus_client.CollectorRegistry` (not the library's global one,
which would also carry whatever other code put there). Names, all prefixed
``conclave_``:

======================================  =========  ==========================================
name                                    type       meaning
======================================  =========  ==========================================
sip_requests_total{method}              counter    requests received and parsed (retransmissions
                                                   included); unknown methods count as OTHER
sip_responses_total{method,class}       counter    responses this server sent on its server
                                                   transactions, by class 1xx-6xx
sip_transaction_seconds{method}         histogram  request received to final response sent
registrations                           gauge      active registrations (bindings)
subscriptions                           gauge      active presence subscriptions
connections                             gauge      open stream connections (TCP, TLS)
auth_failures_total                     counter    credentials that did not verify
auth_lockouts_total                     counter    sources locked out after repeated failures
source_bans_total                       counter    sources banned for exceeding the request rate
source_unbans_total                     counter    source bans (of either kind) that ended
tls_certificate_expiry_days             gauge      days until the server certificate expires
archive_write_seconds                   histogram  time to make one archive record durable
archive_failures_total                  counter    archive records that could not be written
log_events_forwarded_total              counter    events the controller confirmed (or the
                                                   syslog server accepted)
log_events_dropped_total                counter    events lost because the local buffer was full
log_buffer_events / log_buffer_bytes    gauge      events waiting for the controller
log_controller_connected                gauge      1 while connected to the controller
gc_pause_seconds{generation}            histogram  one garbage collection (conclave.ops.gcpause)
======================================  =========  ==========================================

Hot-path cost: the SIP stack calls :func:`count_request`, :func:`count_response`
and :func:`observe_transaction`, each a dict lookup and one locked add on a
cached child. Labels come only from fixed sets, so a peer cannot grow the
number of series by sending odd methods.

The archive feature adds :func:`observe_archive_write` to its service's
``observers``: each durable write is observed in :data:`ARCHIVE_WRITE_SECONDS`,
each record that could not be written counts in :data:`ARCHIVE_FAILURES`.
Gauges that read server state at scrape time are attached by the server with
:meth:`StateGauges.attach`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY: Final = CollectorRegistry(auto_describe=True)
"""This process's metrics; what ``/metrics`` renders."""

METHODS: Final = frozenset(
    (
        "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "UPDATE",
        "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER",
    )
)  # fmt: skip
"""Methods counted under their own name; any other is ``OTHER`` (bounded label values)."""

LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Seconds. A local answer takes about a millisecond; a proxied INVITE waits for
a person to pick up (tens of seconds), so the top buckets are wide."""

ARCHIVE_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
"""Seconds. An archive write is a local append (and sometimes an fsync)."""

SIP_REQUESTS: Final = Counter(
    "conclave_sip_requests", "SIP requests received", ["method"], registry=REGISTRY
)
SIP_RESPONSES: Final = Counter(
    "conclave_sip_responses",
    "SIP responses sent on server transactions",
    ["method", "class"],
    registry=REGISTRY,
)
TRANSACTION_SECONDS: Final = Histogram(
    "conclave_sip_transaction_seconds",
    "Time from a request's arrival to its final response",
    ["method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
AUTH_FAILURES: Final = Counter(
    "conclave_auth_failures", "Authentication attempts that failed", registry=REGISTRY
)
AUTH_LOCKOUTS: Final = Counter(
    "conclave_auth_lockouts",
    "Sources locked out after repeated authentication failures",
    registry=REGISTRY,
)
ACCOUNT_LOCKS: Final = Counter(
    "conclave_account_locks",
    "Accounts locked for one kind of access (familiar or unfamiliar sources) after "
    "repeated failed sign-ins",
    ["access"],
    registry=REGISTRY,
)
ACCOUNT_UNLOCKS: Final = Counter(
    "conclave_account_unlocks",
    "Locked accounts unlocked by an administrator (conclave lockout reset)",
    registry=REGISTRY,
)
SOURCE_BANS: Final = Counter(
    "conclave_source_bans", "Sources banned for exceeding the request rate", registry=REGISTRY
)
SOURCE_UNBANS: Final = Counter(
    "conclave_source_unbans",
    "Source bans that ended (rate or authentication failures)",
    registry=REGISTRY,
)
OVERLOAD_REFUSED: Final = Counter(
    "conclave_overload_refused",
    "Requests answered 503 unparsed because they waited too long in the receive queue",
    registry=REGISTRY,
)
STRAY_RESPONSES_DROPPED: Final = Counter(
    "conclave_stray_responses_dropped",
    "Responses that matched no transaction and were not ours to forward",
    registry=REGISTRY,
)
ARCHIVE_WRITE_SECONDS: Final = Histogram(
    "conclave_archive_write_seconds",
    "Time to write one archive record",
    buckets=ARCHIVE_BUCKETS,
    registry=REGISTRY,
)
ARCHIVE_FAILURES: Final = Counter(
    "conclave_archive_failures", "Archive records that could not be written", registry=REGISTRY
)
LOG_FORWARDED: Final = Counter(
    "conclave_log_events_forwarded", "Events delivered to the logging controller", registry=REGISTRY
)
LOG_DROPPED: Final = Counter(
    "conclave_log_events_dropped",
    "Events lost because the local log buffer was full",
    registry=REGISTRY,
)
LOG_BUFFER_EVENTS: Final = Gauge(
    "conclave_log_buffer_events", "Events waiting for the logging controller", registry=REGISTRY
)
LOG_BUFFER_BYTES: Final = Gauge(
    "conclave_log_buffer_bytes", "Disk used by events waiting for the controller", registry=REGISTRY
)
LOG_CONNECTED: Final = Gauge(
    "conclave_log_controller_connected",
    "1 while the logging agent is connected to its controller",
    registry=REGISTRY,
)

PAIRING_LAG: Final = Gauge(
    "conclave_pairing_replication_lag_seconds",
    "Seconds from a change in the partner pool's user data to its copy arriving here",
    ["pool"],
    registry=REGISTRY,
)
PAIRING_SILENT: Final = Gauge(
    "conclave_pairing_partner_silent_seconds",
    "Seconds since the partner pool's last heartbeat",
    ["pool"],
    registry=REGISTRY,
)

_request_children: dict[str, Counter] = {}
_response_children: dict[tuple[str, int], Counter] = {}
_latency_children: dict[str, Histogram] = {}


def _method(method: str) -> str:
    return method if method in METHODS else "OTHER"


def count_request(method: str) -> None:
    """One request received (called by the stack for every parsed request)."""
    child = _request_children.get(method)
    if child is None:
        child = _request_children.setdefault(method, SIP_REQUESTS.labels(_method(method)))
        if len(_request_children) > 4 * len(METHODS):  # a flood of odd methods
            _request_children.clear()
    child.inc()


def count_response(method: str, status: int) -> None:
    """One response sent for a request of ``method``."""
    key = (method, status // 100)
    child = _response_children.get(key)
    if child is None:
        label = f"{key[1]}xx" if 1 <= key[1] <= 6 else "other"
        child = SIP_RESPONSES.labels(_method(method), label)
        if len(_response_children) < 16 * len(METHODS):
            _response_children[key] = child
    child.inc()


def observe_transaction(method: str, seconds: float) -> None:
    """A server transaction got its final response ``seconds`` after its request arrived."""
    child = _latency_children.get(method)
    if child is None:
        child = TRANSACTION_SECONDS.labels(_method(method))
        if len(_latency_children) < 4 * len(METHODS):
            _latency_children[method] = child
    child.observe(seconds)


def observe_archive_write(seconds: float, ok: bool) -> None:
    """One archive write ended: durable after ``seconds`` (``ok``), or failed.

    The archiving service's ``WriteObserver`` shape
    (:data:`conclave.services.archive.service.WriteObserver`)."""
    if ok:
        ARCHIVE_WRITE_SECONDS.observe(seconds)
    else:
        ARCHIVE_FAILURES.inc()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


GaugeSource = Callable[[], float]


class StateGauges(Collector):
    """Gauges read from live server state each time ``/metrics`` is scraped.

    A server attaches its sources at start-up and detaches them when it
    stops. Sources of every attached server are added up (a process normally
    runs one server; tests may run several).
    """

    NAMES: Final = {
        "registrations": ("conclave_registrations", "Active registrations (bindings)"),
        "subscriptions": ("conclave_subscriptions", "Active presence subscriptions"),
        "connections": ("conclave_connections", "Open stream connections (TCP and TLS)"),
    }

    def __init__(self, clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self.clock = clock
        self._sources: dict[object, dict[str, GaugeSource]] = {}
        self._expiry: dict[object, Callable[[], dt.datetime]] = {}

    def attach(
        self,
        owner: object,
        *,
        registrations: GaugeSource | None = None,
        subscriptions: GaugeSource | None = None,
        connections: GaugeSource | None = None,
        certificate_expiry: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """Read these for ``owner`` from now on; ``certificate_expiry`` returns notAfter (UTC)."""
        given = {
            "registrations": registrations,
            "subscriptions": subscriptions,
            "connections": connections,
        }
        self._sources[owner] = {name: fn for name, fn in given.items() if fn is not None}
        if certificate_expiry is not None:
            self._expiry[owner] = certificate_expiry

    def detach(self, owner: object) -> None:
        self._sources.pop(owner, None)
        self._expiry.pop(owner, None)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # values appear only once a server attaches

    def collect(self) -> Iterator[Metric]:
        for key, (name, doc) in self.NAMES.items():
            readers = [s[key] for s in self._sources.values() if key in s]
            if readers:
                yield GaugeMetricFamily(name, doc, value=sum(_read(r) for r in readers))
        if self._expiry:
            now = self.clock()
            # The soonest expiry is the one an operator must act on.
            days = min((fn() - now).total_seconds() / 86400 for fn in self._expiry.values())
            yield GaugeMetricFamily(
                "conclave_tls_certificate_expiry_days",
                "Days until the server certificate expires",
                value=days,
            )


def _read(source: GaugeSource) -> float:
    try:
        return float(source())
    except Exception:  # a scrape must not fail because one source did
        return float("nan")


STATE: Final = StateGauges()
REGISTRY.register(STATE)


def render() -> tuple[bytes, str]:
    """The text exposition of :data:`REGISTRY` and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
