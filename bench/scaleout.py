"""Scenario 6: one host, one server process or two (docs/pools.md).

The MESSAGE scenario of scenario 2 (proxy authentication, relayed to a registered
sipp UAS), with a UDP socket per call (``sipp -t un``) so that the sender's
addresses vary as they do with many clients, against:

* Conclave as one process (the Standard Edition as scenarios 1-3 run it), and as
  ``serve --workers 2`` (two processes sharing the port with ``SO_REUSEPORT``,
  registrations in Redis, requests for a client of the other worker relayed over
  mutual TLS: about half of them here);
* Kamailio with ``children=1`` and ``children=2`` (UDP workers sharing its socket),
  the same credentials in memory as in scenarios 1-3.

Nothing is pinned in this scenario (the servers may use both cores; sipp stays on
the load-generator core), so each server's two-process figure says what a second
core brings on this machine with the load generator beside it.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from . import report
from .kamailio_server import free_port, start_kamailio
from .servers import DOMAIN, deploy_conclave, start_conclave
from .sipp import write_users_csv
from .sipp_suite import SippScenario, run_ladder

SCENARIO = SippScenario(
    "message-udp-sockets", "6. MESSAGE relayed to a registered user, UDP, a socket per call",
    "message", "udp-multi", 2, f"rcpt@{DOMAIN}", "rcpt", "uas_message",
)  # fmt: skip
REDIS_URL = "redis://127.0.0.1:6379/0"
SCALE_USERS = 2_000
"""Users the senders sign in as (scenario 1 covers the size of the user table)."""


def _redis_prefix() -> str:
    return f"conclave:bench{uuid.uuid4().hex[:8]}:"


def _clear(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def run_scaleout(
    args: argparse.Namespace, work: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Scenario 6 for Conclave (1 and 2 processes) and Kamailio (1 and 2 children)."""
    users = min(args.users, SCALE_USERS)
    csv = write_users_csv(work / "scaleout-users.csv", 0, users)
    rates = [float(r) for r in args.rates.split(",")]
    entry: dict[str, Any] = {"key": SCENARIO.key, "title": SCENARIO.title, "servers": {}}
    data = work / "scaleout"
    prefix = _redis_prefix()
    tls_port, sip_port = free_port(), free_port()
    deploy_conclave(data, users, config={
        "transports": {"tls_port": tls_port, "sip_port": sip_port},
        "pool": {"redis": REDIS_URL, "key_prefix": prefix, "worker_port": free_port()},
    })  # fmt: skip
    ca = data / "ca" / "ca.crt"
    try:
        for workers in (1, 2):
            name = f"conclave-{workers}"
            log(f"  {name}: {'one process' if workers == 1 else f'{workers} workers'}")
            with start_conclave(data, work / f"{name}.log", name=name, workers=workers) as server:
                run = run_ladder(SCENARIO, server, work / SCENARIO.key / name, rates=rates,
                                 step_seconds=args.step_seconds, users_csv=csv, ca_file=ca,
                                 log=log)  # fmt: skip
            entry["servers"][name] = vars(run)
            _clear(prefix)
    finally:
        _clear(prefix)
    if "kamailio" in args.servers.split(","):
        for children in (1, 2):
            name = f"kamailio-{children}"
            log(f"  {name}: children={children}")
            with start_kamailio(
                work / name, users, data / "tls" / "server.crt", data / "tls" / "server.key",
                children=children, name=name,
            ) as server:  # fmt: skip
                run = run_ladder(SCENARIO, server, work / SCENARIO.key / name, rates=rates,
                                 step_seconds=args.step_seconds, users_csv=csv, ca_file=ca,
                                 log=log)  # fmt: skip
            entry["servers"][name] = vars(run)
    entry["scaling"] = scaling(entry["servers"])
    entry["ratio"] = report.ratios(
        {k.split("-")[0]: v for k, v in entry["servers"].items() if k.endswith("-2")}
    )
    return entry


def scaling(servers: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """What the second process brings: two-process rate over one-process rate, per server."""
    out: dict[str, float | None] = {}
    for system in ("conclave", "kamailio"):
        one, two = servers.get(f"{system}-1"), servers.get(f"{system}-2")
        if one and two and one.get("rate"):
            out[system] = round(two["rate"] / one["rate"], 2)
        else:
            out[system] = None
    return out
