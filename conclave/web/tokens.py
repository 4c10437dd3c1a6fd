"""Short-lived API sessions: what a password sign-in on the web API hands out.

A sign-in (``POST /api/v1/session``) gets a random token (256 bits,
URL-safe), valid for :data:`TOKEN_LIFETIME` seconds and never extended: a
client signs in again. The token is presented as ``Authorization: Bearer``
(scripts, the browser client) or, for the admin console, in a cookie that
scripts cannot read (``HttpOnly``, ``Secure``, ``SameSite=Strict``) together
with the session's CSRF token in a request header on every change (see
:mod:`conclave.web.api.auth`).

Sessions live in this process's memory only: a restart signs everybody out,
which for tokens this short costs one sign-in. Only a hash of each token is
kept, so a memory dump or a debug log of the table yields nothing presentable.
An administrator session is a separate kind (``admin``), issued only by the
admin listener to a user the configuration names as an administrator.

Pure logic: every call takes ``now``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

TOKEN_LIFETIME: Final = 900.0
"""Seconds a token is good for (15 minutes): long enough for a console visit or
a script's run, short enough that a leaked token soon stops working."""
TOKEN_BYTES: Final = 32
"""Random octets in a token (and in a CSRF token): not guessable."""
MAX_SESSIONS: Final = 10_000
"""Sessions held at once. Each takes a sign-in with a right password, so only
users can fill it; past it the oldest session ends."""
MAX_SESSIONS_PER_USER: Final = 16
"""Sessions one user holds at once (a few browsers and scripts); past it the
user's oldest ends, so one account cannot fill the table."""


@dataclass(frozen=True)
class Session:
    user: str
    admin: bool
    expires: float
    """wall-clock seconds"""
    csrf: str
    """what a cookie-authenticated change must repeat in its X-CSRF-Token header"""


def _key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """The table of live sessions, by the hash of their tokens."""

    def __init__(
        self,
        lifetime: float = TOKEN_LIFETIME,
        *,
        max_sessions: int = MAX_SESSIONS,
        max_per_user: int = MAX_SESSIONS_PER_USER,
    ) -> None:
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user
        self._table: OrderedDict[str, Session] = OrderedDict()

    def issue(self, user: str, now: float, *, admin: bool = False) -> tuple[str, Session]:
        """A new token for ``user`` and its session."""
        self.expire(now)
        mine = [k for k, s in self._table.items() if s.user == user and s.admin == admin]
        for key in mine[: max(0, len(mine) - self.max_per_user + 1)]:
            del self._table[key]
        while len(self._table) >= self.max_sessions:
            self._table.popitem(last=False)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        session = Session(user, admin, now + self.lifetime, secrets.token_urlsafe(TOKEN_BYTES))
        self._table[_key(token)] = session
        return token, session

    def check(self, token: str, now: float) -> Session | None:
        """The live session ``token`` names, or None (unknown, ended or expired)."""
        key = _key(token)
        session = self._table.get(key)
        if session is None:
            return None
        if session.expires <= now:
            del self._table[key]
            return None
        return session

    def end(self, token: str) -> bool:
        """Sign ``token`` out; True if it was live."""
        return self._table.pop(_key(token), None) is not None

    def end_user(self, user: str) -> int:
        """End every session of ``user`` (disabled, or a new password); how many."""
        folded = user.lower()
        keys = [k for k, s in self._table.items() if s.user.lower() == folded]
        for key in keys:
            del self._table[key]
        return len(keys)

    def expire(self, now: float) -> None:
        """Forget sessions that have ended (the oldest are first in the table)."""
        while self._table:
            key, session = next(iter(self._table.items()))
            if session.expires > now:
                break
            del self._table[key]

    def __len__(self) -> int:
        return len(self._table)
