"""A case variant of an existing user cannot be created to take the account over.

Today's attack: with ``alice`` signed up, ``conclave user add Alice`` (by a
careless or malicious operator, or a provisioning script fed by an attacker)
made a second account with the attacker's password; the server's credential
cache folds case, so one account replaced the other. Now the store refuses
the variant, with a one-line error, and alice's account keeps answering to her
password only, whatever case the attacker signs in with.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.server import ConclaveServer, conclave
from tests.e2e.sipclient import SipClient, digest_header

from .conftest import PASSWORDS

ATTACKER_PASSWORD = "Mallory-Owns-It-4242"
REGISTRAR = "sip:localhost"


def register(client: SipClient, user: str, password: str) -> int:
    """REGISTER ``user`` with digest; the final status."""
    aor = f"sip:{user}@localhost"
    first = client.send("REGISTER", REGISTRAR, from_user=user, to=aor, headers=["Expires: 600"])
    assert first.status == 401
    auth = digest_header(first, user=user, password=password, method="REGISTER", uri=REGISTRAR)
    final = client.send(
        "REGISTER", REGISTRAR, from_user=user, to=aor, headers=["Expires: 600", auth]
    )
    return final.status


def test_case_variant_cannot_be_added_or_used(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(transports="tls,udp")
    added = conclave(
        "user", "add", "Alice", "--dir", str(server.data_dir), "--password-stdin",
        stdin=ATTACKER_PASSWORD + "\n", check=False,
    )  # fmt: skip
    assert added.returncode == 1
    assert added.stderr.strip() == (
        "conclave: error: user alice@localhost already exists "
        "(names differing only in case are one user)"
    )
    assert "Traceback" not in added.stderr

    client = SipClient("udp", server.ports["udp"])
    try:
        for name in ("Alice", "alice", "ALICE"):
            assert register(client, name, ATTACKER_PASSWORD) != 200, name
        assert register(client, "alice", PASSWORDS["alice"]) == 200
    finally:
        client.close()
