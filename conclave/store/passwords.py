"""Passwords: generation, a minimal policy, and digest HA1 values.

The server stores only HA1 = H(username ":" realm ":" password) for each
digest algorithm it offers (RFC 7616 §3.4.2); that is enough to verify a
digest response and is never the clear password. The realm is the user's
domain.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import unicodedata

GENERATED_LENGTH = 24
"""24 characters of a 64-symbol alphabet: 144 bits of entropy, far beyond
any online or offline guessing (digest HA1 leaks allow offline attacks)."""

MIN_LENGTH = 12
"""Below 12 characters, a leaked HA1 can be brute-forced offline quickly:
MD5 and SHA-256 are fast hashes, with no salt beyond user and realm."""

MAX_LENGTH = 256
"""Long enough for any passphrase; bounds hashing work on hostile input."""

URL_SAFE_ALPHABET = string.ascii_letters + string.digits + "-_"
"""The RFC 4648 §5 URL- and filename-safe alphabet: no quoting needed in
shells, URLs, TOML or SIP provisioning files."""

_CLASSES = (
    ("lower-case letter", str.islower),
    ("upper-case letter", str.isupper),
    ("digit", str.isdigit),
)


def generate_password(length: int = GENERATED_LENGTH) -> str:
    """Return a random password from :data:`URL_SAFE_ALPHABET` that meets the policy.

    Show it to the operator once; the store keeps only its HA1 values.
    """
    if length < MIN_LENGTH:
        raise ValueError(f"generated passwords must have at least {MIN_LENGTH} characters")
    while True:
        candidate = "".join(secrets.choice(URL_SAFE_ALPHABET) for _ in range(length))
        # Retrying (rarely needed at 24 characters) keeps the output uniform
        # over the passwords that pass, instead of forcing characters in.
        if not password_policy_problems(candidate):
            return candidate


def password_policy_problems(password: str, *, user: str | None = None) -> list[str]:
    """List why ``password`` is unacceptable; an empty list means it is fine.

    Each problem is a short phrase ("must be at least 12 characters") for the
    CLI to print after the password's name.
    """
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in password):
        problems.append("must not contain control or unassigned characters")
    if password and password.strip() != password:
        problems.append("must not begin or end with white space")
    if password and len(set(password)) < 5:
        problems.append("must use at least 5 different characters")
    kinds = sum(1 for _, test in _CLASSES if any(test(ch) for ch in password))
    others = any(not ch.isalnum() for ch in password)
    if password and kinds + others < 2:
        problems.append("must mix at least two of lower case, upper case, digits and symbols")
    if user and len(user) >= 3 and user.casefold() in password.casefold():
        problems.append("must not contain the user name")
    return problems


def ha1(algorithm: str, user: str, realm: str, password: str) -> str:
    """hex H(user:realm:password) for digest ``algorithm`` "MD5" or "SHA-256".

    Text is encoded as UTF-8, as RFC 7616 §4 requires for charset=UTF-8.
    """
    data = f"{user}:{realm}:{password}".encode()
    if algorithm == "MD5":
        # Not a security choice: MD5 is what RFC 2617 digest clients speak.
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    if algorithm == "SHA-256":
        return hashlib.sha256(data).hexdigest()
    raise ValueError(f"unsupported digest algorithm {algorithm!r}")
