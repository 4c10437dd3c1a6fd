"""Every metric docs/operations.md documents moves when its event happens.

The metric names and types are read from the table in docs/operations.md.
One real ``conclave serve`` (archiving on, the admin listener on, forwarding
its log to a real ``conclave logs controller``) is driven through each
event, and ``/metrics`` is scraped before and after: counters and histograms
must grow, gauges must take the value the event gives them. A metric the
page documents that this test does not drive fails the test, unless it is
listed in :data:`NOT_DRIVEN` with the reason.

Clients that get themselves banned send from their own loopback address
(any of 127.0.0.0/8), so the rest of the traffic from 127.0.0.1 goes on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conclave.sip.message import Response
from tests.ops.processes import ControllerProcess, patch

from .conftest import PASSWORDS
from .server import CONCLAVE, ConclaveServer
from .sipclient import SipClient, digest_header
from .test_metrics import Samples, admin_port, register, scrape
from .test_presence import Peer, Subscription

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "localhost"
USERS = dict(PASSWORDS) | {"dave": "Diver-Deep-24680"}
DEADLINE = 30.0

NOT_DRIVEN: dict[str, str] = {
    "conclave_pairing_replication_lag_seconds": "needs two paired pools: test_pool_pairing.py",
    "conclave_pairing_partner_silent_seconds": "needs two paired pools: test_pool_pairing.py",
}
"""Documented metrics this test cannot make move, each with the reason (and the test
that drives them instead)."""

QUEUE_AGE = 0.3
"""Seconds the frozen server leaves datagrams in its receive queue: more than
the 100 ms overload threshold for new work. The age of the queue is what is
tested here, not a wait for something to happen (a slower machine only
makes the datagrams older)."""


def documented() -> dict[str, str]:
    """``{metric name: type}`` from the metrics table of docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text.split("### Metrics", 1)[1]
    found: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`conclave_"):
            continue
        for name in re.findall(r"`(conclave_\w+)`", cells[0]):
            found[name] = cells[1]
    return found


def total(samples: Samples, name: str) -> float:
    """A metric's value summed over its labels (a histogram's: its count)."""
    return sum(v for (sample, _labels), v in samples.items() if sample == name)


def series(name: str, kind: str) -> str:
    return f"{name}_count" if kind == "histogram" else name


def eventually(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``check`` until it holds, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[ConclaveServer, ControllerProcess]]:
    server = ConclaveServer(tmp_path / "data", transports="tls,udp", users=USERS)
    server.init()
    controller = ControllerProcess(server.data_dir).start()
    patch(
        server,
        {
            "admin": {"enabled": True},
            "archive": {"enabled": True},
            "limits": {"auth_failures_per_minute": 2, "ban_seconds": "1s"},
            "lockout": {"threshold": 2},
            "logging": {"controller": f"127.0.0.1:{controller.port}", "buffer_max": "1MiB"},
        },
    )
    server.start()
    yield server, controller
    server.stop()
    controller.stop()


def test_every_documented_metric_moves(
    deployment: tuple[ConclaveServer, ControllerProcess],
) -> None:
    server, controller = deployment
    metrics = documented()
    assert len(metrics) >= 20, metrics  # the table was found
    server.wait_for(lambda e: e.get("event") == "log controller connected")
    port = admin_port(server)
    before = scrape(port)

    def moved(name: str) -> bool:
        key = series(name, metrics[name])
        return total(scrape(port), key) > total(before, key)

    # SIP requests, responses and transaction times.
    udp = SipClient("udp", server.ports["udp"])
    assert udp.send("OPTIONS", f"sip:{DOMAIN}", from_user="alice").status == 200

    # A registration over TLS: a binding and a connection.
    alice = SipClient("tls", server.ports["tls"], ca=str(server.ca))
    assert register(alice, "alice", USERS["alice"]) == 200

    # An archived message (bob is offline: stored, 202), then one the archive
    # cannot take (its directory is a file): refused in critical mode.
    assert send_message(alice, "alice", "bob", b"archived").status == 202
    directory = server.data_dir / "archive"
    os.rename(directory, directory.with_name("archive.moved"))
    directory.write_text("not a directory\n")
    assert send_message(alice, "alice", "bob", b"refused").status == 503
    directory.unlink()
    os.rename(directory.with_name("archive.moved"), directory)

    # A presence subscription.
    carol = Peer(server, "carol")
    Subscription(carol, f"sip:alice@{DOMAIN}")

    # A response that belongs to no transaction of ours.
    stray = SipClient("udp", server.ports["udp"], host="127.0.0.7")
    stray.send_raw(stray_response(server.ports["udp"], stray.local_port))
    server.wait_for(lambda e: e.get("event") == "stray response dropped")

    # A renewed certificate that expires in 40 days (beyond [tls] renew_before,
    # so the server keeps it): the gauge follows the reload.
    renewed = subprocess.run(
        [*CONCLAVE, "certs", "renew", "--dir", str(server.data_dir), "--days", "40"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert renewed.returncode == 0, renewed.stderr
    server.wait_for(
        lambda e: e.get("event") == "certificate reloaded" and e.get("trigger") == "signal"
    )

    # Wrong passwords until the source is locked out.
    guesser = SipClient("udp", server.ports["udp"], host="127.0.0.3")
    for _ in range(3):
        assert register(guesser, "alice", "not-her-password-1") == 401
    server.wait_for(
        lambda e: e.get("event") == "source banned" and e.get("reason") == "authentication failures"
    )
    # ... which also locked alice's account for unfamiliar sources (alice signed in from
    # 127.0.0.1 above); an administrator lifts the lock.
    server.wait_for(lambda e: e.get("event") == "account locked" and e.get("user") == "alice")
    unlocked = subprocess.run(
        [*CONCLAVE, "lockout", "reset", "alice", "--dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unlocked.stdout.strip() == "alice: unlocked", unlocked.stderr

    # A flood over the request rate (default: 20/s, burst 50).
    flooder = SipClient("udp", server.ports["udp"], host="127.0.0.4")
    for _ in range(80):
        flooder.send_raw(flooder.request("OPTIONS", f"sip:{DOMAIN}", from_user="alice"))
    server.wait_for(
        lambda e: e.get("event") == "source banned" and e.get("reason") == "request rate"
    )
    # Both bans are short here: their ends are logged and counted.
    ended = {"127.0.0.3", "127.0.0.4"}
    eventually(
        lambda: ended <= {e.get("source") for e in server.events("source ban ended")},
        "both bans ended",
    )

    # Requests that waited too long in the receive queue of a frozen server.
    late = SipClient("udp", server.ports["udp"], host="127.0.0.6")
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for n in range(3):
            late.send_raw(late.request("OPTIONS", f"sip:{DOMAIN}", from_user=f"late{n}"))
        time.sleep(QUEUE_AGE)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert {late.recv().status for _ in range(3)} == {503}

    # The register events above reached the controller and were acknowledged.
    eventually(lambda: moved("conclave_log_events_forwarded_total"), "events forwarded")
    during = scrape(port)

    # The controller goes away: the agent notices and buffers.
    assert controller.stop() == 0
    server.wait_for(
        lambda e: e.get("event") in ("log controller connection lost", "log controller unreachable")
    )
    # A debug session traces dave's messages in full: about 1.4 MiB of events
    # for a 1 MiB buffer, so the newest are dropped.
    started = subprocess.run(
        [*CONCLAVE, "logs", "debug", "start", "--dir", str(server.data_dir), "--user", "dave",
         "--for", "10m"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    server.wait_for(lambda e: e.get("event") == "debug session started" and e.get("user") == "dave")
    dave = SipClient("tls", server.ports["tls"], ca=str(server.ca), host="127.0.0.5")
    body = b"x" * 48_000
    for _ in range(30):
        headers = ["Content-Type: text/plain"]
        answer = dave.send(
            "MESSAGE", f"sip:bob@{DOMAIN}", from_user="dave", headers=headers, body=body
        )
        assert answer.status == 407
    eventually(lambda: moved("conclave_log_events_dropped_total"), "events dropped")
    after = scrape(port)

    grew = {name: total(after, series(name, kind)) - total(before, series(name, kind))
            for name, kind in metrics.items()}  # fmt: skip
    checks: dict[str, bool] = {
        "conclave_sip_requests_total": grew["conclave_sip_requests_total"] >= 5,
        "conclave_sip_responses_total": grew["conclave_sip_responses_total"] >= 5,
        "conclave_sip_transaction_seconds": grew["conclave_sip_transaction_seconds"] >= 5,
        "conclave_registrations": total(before, "conclave_registrations") == 0
        and total(during, "conclave_registrations") == 1,
        "conclave_subscriptions": total(before, "conclave_subscriptions") == 0
        and total(during, "conclave_subscriptions") == 1,
        "conclave_connections": total(before, "conclave_connections") == 0
        and total(during, "conclave_connections") >= 2,
        "conclave_auth_failures_total": grew["conclave_auth_failures_total"] >= 3,
        "conclave_auth_lockouts_total": grew["conclave_auth_lockouts_total"] == 1,
        "conclave_account_locks_total": grew["conclave_account_locks_total"] == 1,
        "conclave_account_unlocks_total": grew["conclave_account_unlocks_total"] == 1,
        "conclave_source_bans_total": grew["conclave_source_bans_total"] == 1,
        "conclave_source_unbans_total": grew["conclave_source_unbans_total"] == 2,
        "conclave_overload_refused_total": grew["conclave_overload_refused_total"] == 3,
        "conclave_stray_responses_dropped_total": grew["conclave_stray_responses_dropped_total"]
        == 1,
        "conclave_tls_certificate_expiry_days": total(
            before, "conclave_tls_certificate_expiry_days"
        )
        > 300
        and 39 < total(during, "conclave_tls_certificate_expiry_days") <= 40,
        "conclave_archive_write_seconds": grew["conclave_archive_write_seconds"] == 1,
        "conclave_archive_failures_total": grew["conclave_archive_failures_total"] == 1,
        "conclave_log_events_forwarded_total": grew["conclave_log_events_forwarded_total"] > 0,
        "conclave_log_events_dropped_total": grew["conclave_log_events_dropped_total"] > 0,
        "conclave_log_buffer_events": total(after, "conclave_log_buffer_events")
        > total(during, "conclave_log_buffer_events"),
        "conclave_log_buffer_bytes": total(after, "conclave_log_buffer_bytes")
        > max(total(during, "conclave_log_buffer_bytes"), 512 * 1024),
        "conclave_log_controller_connected": total(during, "conclave_log_controller_connected") == 1
        and total(after, "conclave_log_controller_connected") == 0,
        "conclave_gc_pause_seconds": grew["conclave_gc_pause_seconds"] > 0,
    }
    assert set(metrics) == set(checks) | set(NOT_DRIVEN), (
        "documented but not driven here (drive it, or list it in NOT_DRIVEN with the reason): "
        f"{sorted(set(metrics) - set(checks) - set(NOT_DRIVEN))}; "
        f"driven but not documented: {sorted(set(checks) - set(metrics))}"
    )
    exposed = {sample for sample, _labels in after}
    for name, kind in metrics.items():
        if name in NOT_DRIVEN:  # labelled by a partner pool this server does not have
            continue
        assert series(name, kind) in exposed, f"{name} is not exposed at /metrics"
    stuck = {
        name: {
            "before": total(before, series(name, kind)),
            "after": total(after, series(name, kind)),
        }
        for name, kind in metrics.items()
        if name in checks and not checks[name]
    }
    assert not stuck, stuck
    for client in (udp, alice, stray, guesser, flooder, late, dave):
        client.close()
    carol.close()


def send_message(client: SipClient, sender: str, to_user: str, text: bytes) -> Response:
    """A MESSAGE with credentials (after the 407); returns the final response."""
    uri = f"sip:{to_user}@{DOMAIN}"
    headers = ["Content-Type: text/plain"]
    first = client.send("MESSAGE", uri, from_user=sender, headers=headers, body=text)
    assert first.status == 407, first
    auth = digest_header(first, user=sender, password=USERS[sender], method="MESSAGE", uri=uri)
    return client.send("MESSAGE", uri, from_user=sender, headers=[*headers, auth], body=text)


def stray_response(server_port: int, client_port: int) -> bytes:
    """A 200 whose top Via looks like the server's but names no transaction of it."""
    lines = [
        "SIP/2.0 200 OK",
        f"Via: SIP/2.0/UDP 127.0.0.1:{server_port};branch=z9hG4bK{os.urandom(11).hex()}",
        f"Via: SIP/2.0/UDP 127.0.0.7:{client_port};branch=z9hG4bKstray;rport",
        f"From: <sip:alice@{DOMAIN}>;tag=a",
        f"To: <sip:bob@{DOMAIN}>;tag=b",
        f"Call-ID: stray-{os.urandom(4).hex()}",
        "CSeq: 1 MESSAGE",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
