"""Users whose password fails the policy, found the only honest way: by guessing.

The store keeps digest hashes (HA1 = SHA-256(user:realm:password)), never
passwords, so :func:`conclave.store.passwords.password_policy_problems`
cannot be run on them. Instead the audit computes the HA1 of a list of
candidates for each user (the most common passwords, and variants of the
user's own name and domain) and compares. Every candidate tried *fails the
policy* (candidates that would pass it are dropped), so a match proves the
user's password fails it. A weak password that is not among the candidates
is not found; the PASSWORD-UNVERIFIABLE finding says so in the report.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from conclave.store.database import Database
from conclave.store.errors import StoreError
from conclave.store.passwords import password_policy_problems
from conclave.store.users import UserStore

COMMON_PASSWORDS = (
    "123456", "123456789", "12345678", "1234567890", "12345", "1234", "111111", "000000",
    "password", "Password", "Password1", "password1", "P@ssw0rd", "passw0rd", "qwerty",
    "qwerty123", "abc123", "letmein", "welcome", "Welcome1", "changeme", "secret",
    "admin", "iloveyou", "monkey", "dragon", "sunshine", "football", "princess",
)  # fmt: skip
"""The commonest leaked passwords: all far below the policy's 12 characters."""

_SUFFIXES = ("", "1", "12", "123", "1234", "12345", "123456", "!", "2024", "2025", "2026")


@dataclass(frozen=True)
class WeakPassword:
    user: str
    domain: str
    kind: str
    """which family of candidates matched: ``common``, ``user name``, ``domain``"""


def candidates(user: str, domain: str) -> list[tuple[str, str]]:
    """(kind, password) pairs to try for ``user@domain``; each one fails the policy."""
    label = domain.split(".")[0]
    found: list[tuple[str, str]] = [("common", p) for p in COMMON_PASSWORDS]
    for kind, base in (("user name", user), ("domain", label)):
        for variant in dict.fromkeys((base, base.capitalize(), base.upper(), base * 2)):
            found += [(kind, variant + suffix) for suffix in _SUFFIXES]
    return [
        (kind, password)
        for kind, password in dict.fromkeys(found)
        if password_policy_problems(password, user=user)
    ]


def _ha1(user: str, realm: str, password: str) -> str:
    return hashlib.sha256(f"{user}:{realm}:{password}".encode()).hexdigest()


def weak_passwords(users: Iterable[tuple[str, str, str]]) -> list[WeakPassword]:
    """The users (name, domain, SHA-256 HA1) whose password is one of their candidates."""
    weak: list[WeakPassword] = []
    for name, domain, ha1 in users:
        for kind, password in candidates(name, domain):
            if _ha1(name, domain, password) == ha1:
                weak.append(WeakPassword(name, domain, kind))
                break
    return weak


async def _read_users(url: str) -> list[tuple[str, str, str]]:
    async with Database(url) as database:
        rows = await UserStore(database).all_credentials()
    return [
        (name, domain, creds.ha1_sha256)
        for (name, domain), creds in rows.items()
        if not creds.disabled
    ]


def read_users(url: str) -> list[tuple[str, str, str]]:
    """(name, domain, SHA-256 HA1) of every enabled user; :class:`StoreError` if unreadable."""
    try:
        return asyncio.run(_read_users(url))
    except StoreError:
        raise
    except Exception as exc:  # a driver error: unreachable server, no such table...
        raise StoreError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
