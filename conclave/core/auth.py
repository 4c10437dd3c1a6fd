"""Digest authentication of requests from local users (RFC 3261 §22, RFC 8760).

The :class:`Authenticator` answers one question for the router: is this
request authenticated as a local user, and if not, what should it get back?

Security properties this module is responsible for:

* **Passwords are never held in clear.** The cache holds, per user, the
  digest HA1 for each algorithm (``H(user:realm:password)``), which is what
  the store keeps too.
* **Unknown users and wrong passwords are indistinguishable.** Both get the
  same fresh challenge with the same headers, and both cost the same work:
  an unknown user is checked against a per-process decoy HA1, so the hash
  computations and comparisons are identical. Disabled users are unknown.
* **Replays are refused.** Nonces are HMAC-bound to their issue time
  (:class:`~conclave.sip.digest.NonceFactory`); an expired nonce gets
  ``stale=true`` and a re-used nonce-count is refused
  (:class:`~conclave.sip.digest.NonceCounter`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import structlog

from conclave.sip.digest import (
    Challenge,
    Credentials,
    NonceCounter,
    NonceFactory,
    NonceStatus,
    UnsupportedScheme,
    compute_ha1,
    parse_credentials,
    verify_response,
)
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.message import Request
from conclave.sip.uri import parse_uri

log = structlog.get_logger("conclave.auth")

DEFAULT_ALGORITHMS = ("SHA-256", "MD5")
"""Offered in this order: RFC 8760 §2.4 asks for the most preferred first.
MD5 stays for clients (many SIP phones) that know nothing else."""


@dataclass(frozen=True)
class UserCredentials:
    """What the server knows about one user's secret: HA1 per algorithm."""

    ha1: dict[str, str]
    disabled: bool = False


class CredentialCache:
    """All local users' HA1 values, in memory, so no request waits on the database.

    The server replaces the whole map when the users table changes
    (:meth:`replace`); lookups are a dict access.

    **One identity per name, whatever its case.** Names are looked up
    case-insensitively and answer with the stored spelling (:meth:`canonical`),
    which is the identity everything else uses: AORs, From/To checks, privacy,
    quotas. The store refuses to create a case variant of an existing name; if
    an older database holds two (``Alice`` and ``alice``), neither can sign
    in until an administrator removes one, rather than one taking the other
    over.
    """

    def __init__(self) -> None:
        self._users: dict[str, tuple[str, UserCredentials]] = {}
        self.collisions: frozenset[str] = frozenset()

    def replace(self, users: dict[str, UserCredentials]) -> None:
        table: dict[str, tuple[str, UserCredentials]] = {}
        clashing: set[str] = set()
        for name, creds in users.items():
            key = name.lower()
            if key in table:
                clashing.add(key)
            table[key] = (name, creds)
        for key in clashing:
            log.error(
                "user names differ only in case; both refused until one is removed",
                names=sorted(n for n in users if n.lower() == key),
            )
            del table[key]
        self._users = table
        self.collisions = frozenset(clashing)

    def get(self, user: str) -> UserCredentials | None:
        entry = self._users.get(user.lower())
        if entry is None or entry[1].disabled:
            return None
        return entry[1]

    def canonical(self, user: str) -> str | None:
        """The stored spelling of enabled user ``user`` (matched without regard
        to case), or None when there is no such user."""
        entry = self._users.get(user.lower())
        if entry is None or entry[1].disabled:
            return None
        return entry[0]

    def exists(self, user: str) -> bool:
        """True for an enabled local user (routing: 404 versus 480)."""
        return self.get(user) is not None

    def __len__(self) -> int:
        return len(self._users)


@dataclass(frozen=True)
class Authenticated:
    user: str


@dataclass(frozen=True)
class Challenge401:
    """Answer with a challenge. ``failed`` is True when credentials were tried
    and did not verify (counted against the source for throttling). ``user``
    names the existing account whose password was tried and was wrong (for the
    account lockout); None for an unknown name or when no password was tried."""

    headers: list[tuple[str, str]]
    failed: bool = False
    user: str | None = None


@dataclass(frozen=True)
class BadCredentials:
    """Credentials so malformed that the answer is 400."""

    reason: str


AuthOutcome = Authenticated | Challenge401 | BadCredentials


@dataclass
class Authenticator:
    realm: str
    users: CredentialCache
    nonce_lifetime: float = 300.0
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    md5_only_agents: tuple[str, ...] = ()
    """User-Agent prefixes of clients that abort on a challenge they cannot
    use instead of picking the one they can (baresip 1.0 and sipsak do, for
    SHA-256): they are offered MD5 alone, if MD5 is enabled at all."""
    secret: bytes = field(default_factory=lambda: os.urandom(32))
    random_bytes: Callable[[int], bytes] = os.urandom

    def __post_init__(self) -> None:
        self._nonces = NonceFactory(self.secret, self.nonce_lifetime)
        self._counter = NonceCounter()
        self._opaque = hmac.new(self.secret, b"opaque", hashlib.sha256).hexdigest()[:32]

    def authenticate(
        self, request: Request, *, proxy: bool, now: float, bound_to: str = ""
    ) -> AuthOutcome:
        """Check the request's credentials for our realm.

        ``proxy`` selects Proxy-Authorization / 407 (requests other than
        REGISTER) versus Authorization / 401 (REGISTER, §22.2 and §22.3).
        ``bound_to`` ties the nonces we issue, and the ones we accept, to
        something the request must present again: the caller passes a UDP
        request's source address, so that a request with a forged source
        cannot authenticate with a nonce that was sent to someone else (and a
        spoofed, authenticated request cannot make us send to a victim).
        An authenticated request answers with the user's stored name.
        """
        header = "Proxy-Authorization" if proxy else "Authorization"
        creds: Credentials | None = None
        for value in request.headers.get_all(header):
            try:
                parsed = parse_credentials(value)
            except UnsupportedScheme:
                continue
            except RemoteProtocolError as exc:
                return BadCredentials(exc.reason)
            if parsed.realm == self.realm:
                creds = parsed
                break
        offered = self.offered(request)
        challenge = partial(
            self.challenge_headers, proxy=proxy, now=now, algorithms=offered, bound_to=bound_to
        )
        if creds is None or creds.algorithm not in self.algorithms:
            return Challenge401(challenge())
        if not uri_matches(creds.uri, request):
            # RFC 7616 §3.4.6: the credentials were computed for another
            # request; answer 400 rather than let them be replayed here.
            return BadCredentials("digest uri does not match the Request-URI")
        status = self._nonces.check(creds.nonce, now, bound_to=bound_to)
        if status is NonceStatus.INVALID:
            return Challenge401(challenge(), failed=True)
        user = self.users.get(creds.username)
        ha1 = user.ha1.get(creds.algorithm) if user is not None else None
        if ha1 is None:
            # Same work as a real user: verify against a decoy HA1.
            ha1 = self._decoy_ha1(creds.username, creds.algorithm)
        good = verify_response(creds, ha1, request.method) and user is not None
        if not good:
            tried = self.users.canonical(creds.username) if user is not None else None
            return Challenge401(challenge(), failed=True, user=tried)
        if status is NonceStatus.STALE or not self._counter.accept(creds.nonce, creds.nc or 0):
            # The client knows the password; its nonce is old or the count was
            # used before. stale=true lets it retry without asking the user.
            return Challenge401(challenge(stale=True))
        # The HA1 binds the name as spelled, so only the stored spelling can
        # get here; answer with it all the same, it is the identity.
        return Authenticated(self.users.canonical(creds.username) or creds.username)

    def check_password(self, username: str, password: str) -> tuple[bool, str | None]:
        """Whether ``password`` is ``username``'s (for sign-in outside SIP: the web API).

        Answers ``(good, user)``: ``user`` is the stored spelling of an enabled
        user (None for no such user, whose check costs the same work against a
        decoy). The comparison is of HA1 values, so no clear password is kept.
        """
        user = self.users.get(username)
        algorithm = next((a for a in self.algorithms if user and a in user.ha1), self.algorithms[0])
        stored = user.ha1.get(algorithm) if user is not None else None
        expected = stored if stored is not None else self._decoy_ha1(username, algorithm)
        name = self.users.canonical(username) if user is not None else None
        computed = compute_ha1(name or username, self.realm, password, algorithm)
        good = hmac.compare_digest(computed, expected) and stored is not None
        return good, name

    def refuse(
        self, request: Request, *, proxy: bool, now: float, bound_to: str = ""
    ) -> Challenge401:
        """The answer to a sign-in that may not succeed now (its account is locked
        for its kind of source): what a wrong password gets, a fresh challenge."""
        headers = self.challenge_headers(
            proxy=proxy, now=now, algorithms=self.offered(request), bound_to=bound_to
        )
        return Challenge401(headers, failed=True)

    def offered(self, request: Request) -> tuple[str, ...]:
        """The algorithms to challenge ``request``'s client with."""
        agent = request.headers.get("User-Agent") or ""
        if "MD5" in self.algorithms and any(agent.startswith(p) for p in self.md5_only_agents):
            return ("MD5",)
        return self.algorithms

    def challenge_headers(
        self,
        *,
        proxy: bool,
        now: float,
        stale: bool = False,
        algorithms: tuple[str, ...] | None = None,
        bound_to: str = "",
    ) -> list[tuple[str, str]]:
        """One challenge per algorithm, most preferred first (RFC 8760 §2.4)."""
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        nonce = self._nonces.make(now, self.random_bytes(16), bound_to=bound_to)
        return [
            (
                name,
                Challenge(
                    realm=self.realm,
                    nonce=nonce,
                    algorithm=alg,
                    opaque=self._opaque,
                    stale=stale,
                ).to_header_value(),
            )
            for alg in (algorithms or self.algorithms)
        ]

    def _decoy_ha1(self, username: str, algorithm: str) -> str:
        digest = hmac.new(self.secret, f"{algorithm}:{username}".encode(), hashlib.sha256)
        size = 32 if algorithm == "MD5" else 64
        return digest.hexdigest()[:size].ljust(size, "0")


def uri_matches(digest_uri: str, request: Request) -> bool:
    """RFC 7616 §3.4.6: the digest ``uri`` names the Request-URI, compared as
    URIs (RFC 3261 §19.1.4) when it is not the very same text."""
    if digest_uri == str(request.uri):
        return True
    try:
        return parse_uri(digest_uri).equivalent(request.uri)
    except RemoteProtocolError:
        return False
