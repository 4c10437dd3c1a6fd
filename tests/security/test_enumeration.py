"""An attacker's session against user enumeration: which names exist?

The tools of the trade are SIPVicious's ``svwar`` (it sends REGISTER,
INVITE or OPTIONS for every name of a dictionary and sorts the names by the
answers) and a stopwatch: a server that looks a name up and gives up at once
when it is unknown answers unknown names faster than known ones, even when
the answers themselves look alike (how Lync's Edge leaked its users).

Conclave answers every name alike: a challenge before credentials, and for
wrong credentials the same challenge after the same work (an unknown name is
verified against a decoy HA1; tests/security/test_lockout.py compares the
answers field by field). Here:

* ``svwar`` (Debian's ``sipvicious``), with a dictionary that holds the real
  users among invented ones, finds no user with any of its methods, with or
  without ``--force``;
* over 500 interleaved attempts each, the median time to answer a wrong
  password differs by less than 1 ms between a real user and an invented one,
  for REGISTER (401) and MESSAGE (407).

The timing check is the one place the suite compares times, because the
issue's attack is a timing attack. It compares two medians taken in the same
run, attempt by attempt in alternation, so a slow or busy machine slows both
alike; it never compares a time with a fixed figure.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conclave.sip.message import Response
from tests.e2e.peers_base import free_port, require_tool
from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient, digest_header

from .conftest import PASSWORDS

REAL = sorted(PASSWORDS)
INVENTED = ["carol", "1000", "1001", "admin", "root", "test", "operator", "reception"]
ATTEMPTS = 500
"""Per user and method, as the issue asks."""
MAX_MEDIAN_GAP = 0.001
"""Seconds: the issue's bound on the gap between the two medians."""
SVWAR_TIMEOUT = 60.0


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(
        transports="tls,udp",
        config={
            # One attacking address makes thousands of attempts here: lift the
            # per-source limits and the account lockout out of the way, so that
            # what is measured is the answer to a wrong password, every time.
            "limits": {
                "requests_per_second": 1_000_000,
                "burst": 1_000_000,
                "auth_failures_per_minute": 1_000_000,
            },
            "lockout": {"threshold": 1000},
        },
    )


def svwar(server: ConclaveServer, tmp_path: Path, method: str, *, force: bool) -> str:
    dictionary = tmp_path / "names.txt"
    dictionary.write_text("\n".join([*INVENTED[:4], *REAL, *INVENTED[4:]]) + "\n")
    argv = [
        require_tool("svwar"), "-d", str(dictionary), "-m", method, "--domain", "localhost",
        "-p", str(server.ports["udp"]), "-P", str(free_port("udp")), "-b", "127.0.0.1",
        *(["--force"] if force else []), "127.0.0.1",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SVWAR_TIMEOUT)
    return done.stdout + done.stderr


def test_svwar_finds_no_user(server: ConclaveServer, tmp_path: Path) -> None:
    for method in ("REGISTER", "INVITE", "OPTIONS"):
        for force in (False, True):
            report = svwar(server, tmp_path, method, force=force)
            assert "found nothing" in report, report
            # It was answered (the same challenge for every name), not ignored.
            assert "authentication request" in report or "SIP/2.0 40" in report, report
            for name in REAL:
                assert f"| {name} " not in report and f"|{name}|" not in report, report


def timed_wrong_password(
    client: SipClient, user: str, method: str, domain: str = "localhost"
) -> float:
    """Seconds from sending credentials with a wrong password to the answer."""
    uri = f"sip:{domain}" if method == "REGISTER" else f"sip:bob@{domain}"
    to = f"sip:{user}@{domain}" if method == "REGISTER" else uri
    body = b"hello" if method == "MESSAGE" else b""
    extra = ["Content-Type: text/plain"] if body else []
    first = client.send(method, uri, from_user=user, to=to, headers=extra, body=body)
    assert first.status == (401 if method == "REGISTER" else 407)
    auth = digest_header(first, user=user, password="not-the-Password-9", method=method, uri=uri)
    data = client.request(method, uri, from_user=user, to=to, headers=[*extra, auth], body=body)
    started = time.perf_counter()
    client.send_raw(data)
    answer: Response = client.final()
    took = time.perf_counter() - started
    assert answer.status == first.status, answer
    return took


@pytest.mark.parametrize("method", ["REGISTER", "MESSAGE"])
def test_a_stopwatch_cannot_tell_real_users_from_invented_ones(
    server: ConclaveServer, method: str
) -> None:
    client = SipClient("udp", server.ports["udp"], host="127.0.0.51")
    times: dict[str, list[float]] = {"alice": [], "nosuchuser": []}
    try:
        for _ in range(20):  # warm both paths first (caches, the decoy's first use)
            for user in times:
                timed_wrong_password(client, user, method)
        for _ in range(ATTEMPTS):
            for user, taken in times.items():
                taken.append(timed_wrong_password(client, user, method))
    finally:
        client.close()
    real, invented = (statistics.median(t) for t in times.values())
    assert abs(real - invented) < MAX_MEDIAN_GAP, (
        f"{method}: median {real * 1e3:.3f} ms for a real user, "
        f"{invented * 1e3:.3f} ms for an invented one"
    )
