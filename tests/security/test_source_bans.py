"""An attacker's session against per-source bans: a guesser who waits each ban out.

A password guesser that is banned simply waits and starts again. Each new
ban of the same source lasts twice the last (up to ``[limits]
max_ban_seconds``), so waiting out the bans buys fewer and fewer guesses;
every ban and every end of a ban is in the log. The account's own user,
signing in from where she did before, is never held up by any of it.

Short bans (1 s, at most 2 s) keep the session quick; the escalation and the
day-long memory are checked with a clock in tests/transport/test_guard.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient
from tests.e2e.test_security import register

from .conftest import PASSWORDS

GUESSER = "127.0.0.41"
FAILURES_PER_MINUTE = 2
"""``[limits] auth_failures_per_minute``: the third wrong password in a row bans."""
DEADLINE = 30.0


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(
        transports="tls,udp",
        config={
            "limits": {
                "auth_failures_per_minute": FAILURES_PER_MINUTE,
                "ban_seconds": "1s",
                "max_ban_seconds": "2s",
            },
        },
    )


def guesser_events(server: ConclaveServer, name: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events called ``name`` about the guesser, once there are that many."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = [e for e in server.events(name) if e.get("source") == GUESSER]
        if len(found) >= count:
            return found[:count]
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} {name!r} events for {GUESSER}: saw {found}")
        time.sleep(0.05)


def guess_until_banned(server: ConclaveServer, round_no: int) -> None:
    guesser = SipClient("udp", server.ports["udp"], host=GUESSER)
    try:
        for n in range(FAILURES_PER_MINUTE + 1):
            status, _final = register(guesser, "alice", f"Guess-{round_no}-{n}!")
            assert status == 401
    finally:
        guesser.close()


def test_each_ban_of_a_returning_guesser_is_longer(server: ConclaveServer) -> None:
    alice = SipClient("udp", server.ports["udp"])  # 127.0.0.1: where alice signs in
    assert register(alice, "alice", PASSWORDS["alice"])[0] == 200
    for round_no in (1, 2, 3):
        guess_until_banned(server, round_no)
        guesser_events(server, "source banned", round_no)
        # alice is not held up while the guesser waits its ban out.
        assert register(alice, "alice", PASSWORDS["alice"])[0] == 200
        guesser_events(server, "source ban ended", round_no)
    bans = guesser_events(server, "source banned", 3)
    assert [b["reason"] for b in bans] == ["authentication failures"] * 3
    assert [b["seconds"] for b in bans] == [1, 2, 2]  # doubled, then capped
    ended = guesser_events(server, "source ban ended", 3)
    assert len(ended) == 3
