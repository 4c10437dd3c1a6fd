"""Who sent a request: digest or client certificate, with the answers that go with it.

:class:`SignIn` is the router's one question about identity. It either returns
the local user the request is authenticated as (its stored spelling), or it
has already answered the request: 401/407 with a challenge, 400 for malformed
credentials. Failed attempts count against the *source*, never the user
(:class:`~conclave.transport.guard.SourceGuard`) and against the *account*
only for the kind of source they come from
(:class:`~conclave.core.lockout.AccountLockout`): familiar or unfamiliar. An
outsider's guesses lock outsiders out of the account; the user keeps signing
in from familiar places. A locked sign-in is answered as a wrong password is.

Over UDP the source address may be forged, so nonces are bound to it and a
challenge is sent once, with no retransmissions and no transaction kept (RFC
3261 §26.3.2.4): a forged request costs a victim one response, not eleven.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from conclave.ops import metrics
from conclave.sip.flow import Flow
from conclave.sip.message import Request
from conclave.sip.transaction import ServerTransaction
from conclave.sip.uri import SipURI
from conclave.transport.guard import SourceGuard

from .auth import Authenticated, Authenticator, BadCredentials, CredentialCache
from .lockout import AccountLockout
from .stack import SipStack

log = structlog.get_logger("conclave.signin")

CertificateUser = Callable[[Flow], str | None]
"""The user a verified client certificate on a TLS flow names, if any."""

ClientSource = Callable[[Request, Flow], str | None]
"""For a request relayed by a trusted Edge: the client address the Edge stamped
in its Via (docs/edge.md); None for a request from anyone else."""

AUTHENTICATED_HEADER = "Conclave-Authenticated"
"""Set by a Director on a request it authenticated: the local user it is from.
Believed only on a trusted Director's connection; removed from every request."""

Vouched = Callable[[Flow], bool]
"""True for a connection from a trusted Director (its server certificate)."""

BAN_HEADER = "Conclave-Source-Ban"
"""On a response to a trusted Edge: the client behind it is banned for this many
seconds; the Edge applies the ban at the perimeter and removes the header."""


@dataclass
class SignIn:
    stack: SipStack
    auth: Authenticator
    users: CredentialCache
    guard: SourceGuard
    certificate_user: CertificateUser | None = None
    """Set when ``[tls] client_auth`` is on: a user whose client certificate
    verified needs no digest."""
    lockout: AccountLockout = field(default_factory=AccountLockout)
    wall_clock: Callable[[], float] = field(default=time.time)
    on_lock_change: Callable[[], None] | None = None
    """Told when an account is locked (the server saves the lockout state)."""
    client_source: ClientSource | None = None
    """Set when the topology has Edges: the client a trusted Edge relays for."""
    director: Vouched | None = None
    """Set when the topology has Directors: who may vouch for a user it authenticated."""

    def identify(
        self, txn: ServerTransaction, request: Request, flow: Flow, *, proxy: bool
    ) -> str | None:
        """The user ``request`` is authenticated as, or None once it has been answered.

        ``proxy`` selects Proxy-Authorization and 407 (every request but
        REGISTER) over Authorization and 401 (§22.2, §22.3).
        """
        vouched = request.headers.get(AUTHENTICATED_HEADER)
        if vouched is not None:
            request.headers.remove(AUTHENTICATED_HEADER)
            if self.director is not None and self.director(flow):
                user = self.users.canonical(vouched)
                if user is not None:
                    structlog.contextvars.bind_contextvars(user=user, auth="director")
                    return user
        user = self._by_certificate(request, flow)
        if user is not None:
            structlog.contextvars.bind_contextvars(user=user, auth="certificate")
            return user
        now = self.wall_clock()
        relayed = self.client_source(request, flow) if self.client_source else None
        source = relayed or flow.remote[0]
        if relayed is not None and self.guard.is_banned(relayed, now):
            # The Edge had not heard yet (or restarted): tell it again.
            remaining = (self.guard.banned_until(relayed, now) or now) - now
            headers = [(BAN_HEADER, str(max(int(remaining), 1)))]
            self.stack.respond(txn, 403, "Source banned", headers=headers)
            return None
        bound_to = flow.remote[0] if flow.transport == "udp" else ""
        outcome = self.auth.authenticate(request, proxy=proxy, now=now, bound_to=bound_to)
        if isinstance(outcome, Authenticated):
            if not self.lockout.is_locked(outcome.user, source, now):
                self.lockout.success(outcome.user, source, now)
                structlog.contextvars.bind_contextvars(user=outcome.user)
                return outcome.user
            # The right password, but this kind of access to the account is
            # locked: refused exactly as a wrong password is, and not counted.
            log.info("sign-in refused: account locked", user=outcome.user, source=source)
            outcome = self.auth.refuse(request, proxy=proxy, now=now, bound_to=bound_to)
        if isinstance(outcome, BadCredentials):
            self.stack.respond(txn, 400, f"Malformed credentials: {outcome.reason}")
            return None
        headers = list(outcome.headers)
        if outcome.failed:
            banned = self._failed(source, now)
            if banned and relayed is not None:
                headers.append((BAN_HEADER, str(int(self.guard.ban_length(source)))))
            if outcome.user is not None:
                self._account_failed(outcome.user, source, now)
        once = flow.transport == "udp"
        self.stack.respond(txn, 407 if proxy else 401, headers=headers, once=once)
        return None

    def verify_password(self, name: str, password: str, source: str) -> str | None:
        """Sign-in with a password outside SIP (the web API): the user, or None.

        The same rules as a digest sign-in from ``source``: a banned source is
        refused, a failure counts against the source (and bans it at the same
        threshold) and against the account (smart lockout), and an account
        locked for this kind of source is refused even with the right password.
        Every refusal looks the same, whether the name exists or not.
        """
        now = self.wall_clock()
        if self.guard.is_banned(source, now):
            return None
        good, user = self.auth.check_password(name, password)
        if good and user is not None:
            if not self.lockout.is_locked(user, source, now):
                self.lockout.success(user, source, now)
                return user
            log.info("sign-in refused: account locked", user=user, source=source)
            return None
        self._failed(source, now)
        if user is not None:
            self._account_failed(user, source, now)
        return None

    def _by_certificate(self, request: Request, flow: Flow) -> str | None:
        if self.certificate_user is None or not flow.secure:
            return None
        named = self.certificate_user(flow)
        user = self.users.canonical(named) if named is not None else None
        sender = request.from_addr.uri
        claimed = sender.user if isinstance(sender, SipURI) else None
        return user if user is not None and user == claimed else None

    def _failed(self, source: str, now: float) -> bool:
        """Count a failure against ``source``; True if that banned it."""
        metrics.AUTH_FAILURES.inc()
        log.info("authentication failed", source=source)
        if self.guard.record_auth_failure(source, now):
            metrics.AUTH_LOCKOUTS.inc()
            log.warning(
                "source banned",
                source=source,
                reason="authentication failures",
                seconds=self.guard.ban_length(source),
            )
            return True
        return False

    def _account_failed(self, user: str, source: str, now: float) -> None:
        locked = self.lockout.failure(user, source, now)
        if locked is None:
            return
        metrics.ACCOUNT_LOCKS.labels(access=locked.access.value).inc()
        log.warning(
            "account locked",
            user=user,
            access=locked.access.value,
            source=source,
            failures=locked.failures,
            seconds=self.lockout.duration,
        )
        if self.on_lock_change is not None:
            self.on_lock_change()
