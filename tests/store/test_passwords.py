"""Password generation, policy and HA1 values."""

from __future__ import annotations

import hashlib

import pytest

from conclave.store import generate_password, ha1, password_policy_problems
from conclave.store.passwords import URL_SAFE_ALPHABET


def test_generated_passwords() -> None:
    seen = {generate_password() for _ in range(50)}
    assert len(seen) == 50
    for password in seen:
        assert len(password) >= 20
        assert set(password) <= set(URL_SAFE_ALPHABET)
        assert password_policy_problems(password) == []


def test_generate_longer_and_refuse_short() -> None:
    assert len(generate_password(40)) == 40
    with pytest.raises(ValueError):
        generate_password(8)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short1A", "must be at least 12 characters"),
        ("x" * 300 + "Y1", "must be at most 256 characters"),
        ("abcdefghijkl", "must mix at least two of lower case, upper case, digits and symbols"),
        ("aaaaaaBBBBBB", "must use at least 5 different characters"),
        ("tab\tinside-Password1", "must not contain control or unassigned characters"),
        (" leading-Space1", "must not begin or end with white space"),
        ("alice-Password-1", "must not contain the user name"),
    ],
)
def test_policy_problems(password: str, problem: str) -> None:
    assert problem in password_policy_problems(password, user="alice")


def test_policy_accepts_passphrase() -> None:
    assert password_policy_problems("correct horse battery staple") == []


def test_ha1_values() -> None:
    data = b"alice:example.test:secret"
    assert ha1("MD5", "alice", "example.test", "secret") == hashlib.md5(data).hexdigest()
    assert ha1("SHA-256", "alice", "example.test", "secret") == hashlib.sha256(data).hexdigest()
    # RFC 7616 §3.9.1 example: HA1 for Mufasa / http-auth@example.org / Circle of Life.
    assert (
        ha1("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life")
        == "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
    )
    with pytest.raises(ValueError):
        ha1("SHA-512", "a", "b", "c")
