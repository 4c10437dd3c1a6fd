"""An attacker's session against account lockout and user enumeration.

A password spray from outside (several addresses, a few guesses each) must
lock outsiders out of the account without locking its user out: alice keeps
signing in from where she signed in before. Even the right password gets
nowhere from outside while the lock holds, and nothing in the answers tells
the attacker whether a name exists or is locked. An administrator sees the
lock and lifts it; a restart keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from conclave.sip.message import Response
from tests.e2e.server import ConclaveServer, conclave
from tests.e2e.sipclient import SipClient, digest_header
from tests.e2e.test_security import register

from .conftest import PASSWORDS

USERS = dict(PASSWORDS) | {"dave": "Diver-Deep-24680"}
THRESHOLD = 3
SPRAY = ("127.0.0.21", "127.0.0.22", "127.0.0.23")
"""One guess from each: no source fails often enough to be banned."""


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(
        transports="tls,udp",
        users=USERS,
        config={
            "lockout": {"threshold": THRESHOLD, "duration": "10m"},
            "limits": {"auth_failures_per_minute": 5},
        },
    )


def attempt(server: ConclaveServer, source: str, user: str, password: str) -> Response:
    client = SipClient("udp", server.ports["udp"], host=source)
    try:
        _status, final = register(client, user, password)
    finally:
        client.close()
    assert isinstance(final, Response)
    return final


def shape(response: Response) -> tuple[int, str, list[str], list[str]]:
    """What an attacker compares: status, reason, header names, challenge parameters."""
    challenge = response.headers.get_all("WWW-Authenticate")
    params = sorted({p.split("=")[0].strip() for c in challenge for p in c.split(",")})
    return response.status, response.reason, [n for n, _ in response.headers], params


def spray(server: ConclaveServer, user: str) -> None:
    for source in SPRAY:
        assert attempt(server, source, user, "Spring2026!").status == 401
    server.wait_for(
        lambda e: (
            e.get("event") == "account locked"
            and e.get("user") == user
            and e.get("access") == "unfamiliar"
        )
    )


def test_a_spray_from_outside_locks_outsiders_out_not_the_user(server: ConclaveServer) -> None:
    assert attempt(server, "127.0.0.1", "alice", PASSWORDS["alice"]).status == 200  # familiar
    spray(server, "alice")
    # From outside, the right password now gets what a wrong one gets.
    locked = attempt(server, "127.0.0.24", "alice", PASSWORDS["alice"])
    wrong = attempt(server, "127.0.0.25", "bob", "not-his-password")
    unknown = attempt(server, "127.0.0.26", "nosuchuser", "whatever-Password-1")
    assert locked.status == wrong.status == unknown.status == 401
    assert shape(locked) == shape(wrong) == shape(unknown)
    # alice, from where she signed in before, is not locked out.
    assert attempt(server, "127.0.0.1", "alice", PASSWORDS["alice"]).status == 200
    # Only alice is locked, and only from outside.
    assert attempt(server, "127.0.0.27", "bob", PASSWORDS["bob"]).status == 200


def test_a_brute_force_never_finds_the_password(server: ConclaveServer) -> None:
    """One source guessing: the account locks after THRESHOLD guesses (the source is
    banned soon after); the right password, tried next, still fails."""
    assert attempt(server, "127.0.0.2", "carol", PASSWORDS["carol"]).status == 200  # her laptop
    source = "127.0.0.31"
    client = SipClient("udp", server.ports["udp"], host=source)
    guesses = [f"Guess-{n}-password" for n in range(THRESHOLD)] + [PASSWORDS["carol"]]
    for guess in guesses:
        status, _ = register(client, "carol", guess)
        assert status == 401
    client.close()
    assert attempt(server, "127.0.0.2", "carol", PASSWORDS["carol"]).status == 200
    # Somewhere carol never signed in from is outside, and locked out of her account.
    assert attempt(server, "127.0.0.3", "carol", PASSWORDS["carol"]).status == 401


def test_the_organisations_networks_are_always_familiar(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(
        transports="tls,udp",
        config={"lockout": {"threshold": THRESHOLD, "internal_networks": ["127.0.0.0/30"]}},
    )
    spray(server, "bob")  # bob never signed in anywhere before
    assert attempt(server, "127.0.0.2", "bob", PASSWORDS["bob"]).status == 200  # the office
    assert attempt(server, "127.0.0.24", "bob", PASSWORDS["bob"]).status == 401


def test_an_unfamiliar_source_cannot_enumerate_users(server: ConclaveServer) -> None:
    """Existing and unknown names answer alike, for REGISTER and for a MESSAGE."""
    existing = attempt(server, "127.0.0.41", "alice", "wrong-Password-123")
    unknown = attempt(server, "127.0.0.42", "zed", "wrong-Password-123")
    assert shape(existing) == shape(unknown)
    answers = []
    for user, source in (("bob", "127.0.0.43"), ("nobody", "127.0.0.44")):
        client = SipClient("udp", server.ports["udp"], host=source)
        first = client.send("MESSAGE", "sip:alice@localhost", from_user=user, body=b"hi",
                            headers=["Content-Type: text/plain"])  # fmt: skip
        auth = digest_header(first, user=user, password="wrong-Password-123",
                             method="MESSAGE", uri="sip:alice@localhost")  # fmt: skip
        final = client.send("MESSAGE", "sip:alice@localhost", from_user=user, body=b"hi",
                            headers=["Content-Type: text/plain", auth])  # fmt: skip
        client.close()
        answers.append((final.status, final.reason, [n for n, _ in final.headers]))
    assert answers[0] == answers[1] and answers[0][0] == 407


def test_the_administrator_sees_and_lifts_the_lock_and_a_restart_keeps_it(
    server: ConclaveServer,
) -> None:
    assert attempt(server, "127.0.0.1", "dave", USERS["dave"]).status == 200
    spray(server, "dave")
    data = str(server.data_dir)
    status = conclave("lockout", "status", "--dir", data)
    assert "dave: unfamiliar access locked until" in status.stdout
    assert "familiar: 127.0.0.1" in status.stdout
    [entry] = json.loads(conclave("lockout", "status", "dave", "--dir", data, "--json").stdout)
    assert set(entry["locked_until"]) == {"unfamiliar"}

    # A restart neither unlocks the account nor forgets where dave signs in from.
    assert server.stop() == 0
    server.start()
    assert attempt(server, "127.0.0.51", "dave", USERS["dave"]).status == 401
    assert attempt(server, "127.0.0.1", "dave", USERS["dave"]).status == 200

    reset = conclave("lockout", "reset", "dave", "--dir", data)
    assert reset.stdout.strip() == "dave: unlocked"
    server.wait_for(lambda e: e.get("event") == "account unlocked" and e.get("user") == "dave")
    assert attempt(server, "127.0.0.51", "dave", USERS["dave"]).status == 200
    again = conclave("lockout", "reset", "dave", "--dir", data)
    assert again.stdout.strip() == "dave: was not locked"
    assert "dave" not in conclave("lockout", "status", "--dir", data).stdout


def test_lockout_settings_below_the_directory_are_enforced(tmp_path: object) -> None:
    """A threshold at or above the directory's is a configuration error, not a silent risk."""
    from conclave.config import ConfigError, config_from_mapping

    server = {"domain": "example.test", "host": "127.0.0.1"}
    with pytest.raises(ConfigError, match="must be below directory_threshold"):
        config_from_mapping(
            {"server": server, "lockout": {"threshold": 5, "directory_threshold": 5}}
        )
