"""On-demand debug: full SIP traces for one user or one Call-ID, for a bounded time.

The operator runs ``conclave logs debug start --dir DATA --user alice --for 10m``
(or ``--call-id X``). The command adds a session to the control file
``DATA/logdebug.json`` (mode 0600, written atomically: the data directory's
permissions are what authenticates the operator) and sends the running server
SIGUSR1; the server also re-reads the file every :data:`CONTROL_POLL` seconds,
so a lost signal only delays the start. Each session carries its end time, and
the server drops it by itself when that passes, logging ``debug session ended``.

While a session is active the SIP stack hands every message it receives and
sends to :data:`TRACER` (a single attribute test when none is). A message
matches when its Call-ID is the session's, or when its From, To or request
URI names the session's user; the Call-IDs of a user's messages are then
followed, so the answers and forwarded copies of the same call are traced
too. Each match is logged as a ``sip trace`` event (direction, transport,
peer, Call-ID, the message text) that the logging agent forwards like any
key event; so are all other events of the traced user or call.

Credentials never appear in a trace: :func:`redact` replaces the values of
Authorization, Proxy-Authorization, WWW-Authenticate, Proxy-Authenticate,
Authentication-Info and the Security-* headers, keeping only the scheme,
username and realm.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import structlog

log = structlog.get_logger("conclave.trace")

CONTROL_FILE: Final = "logdebug.json"
"""In the data directory: the debug sessions asked for."""
CONTROL_POLL: Final = 2.0
"""Seconds between checks of the control file (the fallback for a lost SIGUSR1)."""
MAX_DURATION: Final = 24 * 3600.0
"""Longest debug session: full traces are heavy and hold message content."""
MAX_SESSIONS: Final = 16
"""Sessions active at once. Each adds a comparison per traced message."""
MAX_FOLLOWED_CALLS: Final = 4096
"""Call-IDs of a traced user followed at once; the oldest is forgotten first."""
MAX_TRACE_CHARS: Final = 64 * 1024
"""Characters of one message kept in a trace (the parser's own limit)."""

REDACTED_HEADERS: Final = (
    "authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate",
    "authentication-info", "proxy-authentication-info",
    "security-client", "security-server", "security-verify",
)  # fmt: skip
_REDACT_LINE = re.compile(
    r"^(" + "|".join(re.escape(h) for h in REDACTED_HEADERS) + r")([ \t]*:[ \t]*)(.*)$",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9-]*)[ \t]")
"""An auth-scheme (Digest, NTLM, Kerberos, TLS-DSK...) before its parameters."""
_KEPT_PARAM = re.compile(r'\b(username|realm)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^,\s]+)', re.I)
_HEADER = re.compile(r"^(call-id|i|from|f|to|t)[ \t]*:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_USER = re.compile(r"\bsips?:([^@;>:\s]+)@([^;>:\s]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` (a SIP message) with every credential-bearing header value replaced."""
    out: list[str] = []
    redacting = False
    for line in text.split("\n"):
        if redacting and line[:1] in (" ", "\t"):
            continue  # a folded continuation of a redacted value (RFC 3261 §7.3.1)
        match = _REDACT_LINE.match(line.rstrip("\r"))
        redacting = match is not None
        if match is None:
            out.append(line)
            continue
        value = match.group(3)
        scheme_match = _SCHEME.match(value)
        scheme = scheme_match.group(1) if scheme_match else ""
        kept = [f"{m.group(1)}={m.group(2)}" for m in _KEPT_PARAM.finditer(value)]
        shown = " ".join(p for p in (scheme, ", ".join(kept)) if p)
        cr = "\r" if line.endswith("\r") else ""
        out.append(f"{match.group(1)}{match.group(2)}{shown + ' ' if shown else ''}<redacted>{cr}")
    return "\n".join(out)


# --- the control file ----------------------------------------------------------------------


@dataclass(frozen=True)
class DebugSession:
    """One request to trace a user or a call until ``until`` (seconds since the epoch)."""

    id: str
    until: float
    user: str | None = None
    call_id: str | None = None

    def describe(self) -> str:
        return f"user {self.user}" if self.user else f"Call-ID {self.call_id}"


def read_sessions(data_dir: Path) -> list[DebugSession]:
    """The sessions in ``DATA/logdebug.json`` (none if it is missing or unreadable)."""
    try:
        raw = json.loads((Path(data_dir) / CONTROL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    sessions = []
    for item in raw.get("sessions", []) if isinstance(raw, dict) else []:
        try:
            session = DebugSession(
                id=str(item["id"]),
                until=float(item["until"]),
                user=_clean(item.get("user")),
                call_id=_clean(item.get("call_id"), lower=False),
            )
        except (KeyError, TypeError, ValueError):
            continue
        if session.user or session.call_id:
            sessions.append(session)
    return sessions[:MAX_SESSIONS]


def _clean(value: object, *, lower: bool = True) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower() if lower else value.strip()


def write_sessions(data_dir: Path, sessions: Iterable[DebugSession]) -> Path:
    """Replace the control file atomically (mode 0600)."""
    path = Path(data_dir) / CONTROL_FILE
    tmp = path.with_name(f".{CONTROL_FILE}.{os.getpid()}.tmp")
    text = json.dumps({"sessions": [asdict(s) for s in sessions]}, indent=1) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def add_session(
    data_dir: Path,
    *,
    seconds: float,
    user: str | None = None,
    call_id: str | None = None,
    now: float | None = None,
) -> DebugSession:
    """Add a session to the control file (expired ones are pruned); the caller signals."""
    if (user is None) == (call_id is None):
        raise ValueError("give exactly one of a user and a Call-ID")
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"the duration must be more than 0s and at most {MAX_DURATION / 3600:g}h")
    now = time.time() if now is None else now
    live = [s for s in read_sessions(data_dir) if s.until > now]
    if len(live) >= MAX_SESSIONS:
        raise ValueError(f"{MAX_SESSIONS} debug sessions are already active")
    session = DebugSession(
        id=secrets.token_hex(4),
        until=now + seconds,
        user=_clean(user),
        call_id=_clean(call_id, lower=False),
    )
    write_sessions(data_dir, [*live, session])
    return session


def remove_sessions(
    data_dir: Path, *, user: str | None = None, call_id: str | None = None
) -> list[DebugSession]:
    """Remove the matching sessions (all of them when neither is given); returns those removed."""
    sessions = read_sessions(data_dir)
    user, call_id = _clean(user), _clean(call_id, lower=False)

    def chosen(s: DebugSession) -> bool:
        if user is None and call_id is None:
            return True
        return (user is not None and s.user == user) or (
            call_id is not None and s.call_id == call_id
        )

    removed = [s for s in sessions if chosen(s)]
    write_sessions(data_dir, [s for s in sessions if not chosen(s)])
    return removed


# --- the tracer ----------------------------------------------------------------------------


class Tracer:
    """Matches SIP messages and events against the active debug sessions.

    :attr:`active` is False when there is nothing to trace; callers on the
    hot path test it before calling anything else.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.active = False
        self._sessions: dict[str, DebugSession] = {}
        self._calls: OrderedDict[str, str] = OrderedDict()  # Call-ID -> session id
        self._next_end = float("inf")

    @property
    def sessions(self) -> list[DebugSession]:
        return list(self._sessions.values())

    def set_sessions(self, sessions: Iterable[DebugSession]) -> None:
        """Make ``sessions`` (from the control file) the active set; log what changed."""
        now = self.clock()
        wanted = {s.id: s for s in sessions if s.until > now}
        for sid, session in list(self._sessions.items()):
            if sid not in wanted:
                self._end(session, "stopped")
        for sid, session in wanted.items():
            if sid not in self._sessions:
                self._sessions[sid] = session
                log.info(
                    "debug session started",
                    session=sid,
                    user=session.user,
                    call_id=session.call_id,
                    until=_iso(session.until),
                    seconds=round(session.until - now),
                )
        self._recompute()

    def next_end(self) -> float | None:
        """When the soonest session ends (epoch seconds), or None."""
        return None if not self._sessions else self._next_end

    def expire(self) -> None:
        """End the sessions whose time is up (called by a timer, and lazily on use)."""
        now = self.clock()
        for session in list(self._sessions.values()):
            if session.until <= now:
                self._end(session, "time is up")
        self._recompute()

    def _end(self, session: DebugSession, reason: str) -> None:
        del self._sessions[session.id]
        for call_id in [c for c, sid in self._calls.items() if sid == session.id]:
            del self._calls[call_id]
        log.info(
            "debug session ended",
            session=session.id,
            user=session.user,
            call_id=session.call_id,
            reason=reason,
        )

    def _recompute(self) -> None:
        self._next_end = min((s.until for s in self._sessions.values()), default=float("inf"))
        self.active = bool(self._sessions)

    # -- matching ----------------------------------------------------------------------------
    def _match(self, call_id: str | None, users: Iterable[str]) -> str | None:
        if call_id is not None:
            sid = self._calls.get(call_id)
            if sid is not None:
                return sid
        for session in self._sessions.values():
            if session.call_id is not None and session.call_id == call_id:
                return session.id
            if session.user is not None and session.user in users:
                if call_id is not None:
                    self._calls[call_id] = session.id
                    while len(self._calls) > MAX_FOLLOWED_CALLS:
                        self._calls.popitem(last=False)
                return session.id
        return None

    def message(self, direction: str, data: bytes, transport: str, peer: tuple[str, int]) -> None:
        """The stack received (``in``) or sent (``out``) ``data``: log it if a session wants it."""
        if self.clock() >= self._next_end:
            self.expire()
            if not self.active:
                return
        text = data[:MAX_TRACE_CHARS].decode("utf-8", "replace")
        head = text.split("\r\n\r\n", 1)[0]
        call_id, users = _identify(head)
        sid = self._match(call_id, users)
        if sid is None:
            return
        log.info(
            "sip trace",
            session=sid,
            direction=direction,
            transport=transport,
            peer=f"{peer[0]}:{peer[1]}",
            call_id=call_id,
            first_line=head.split("\r\n", 1)[0][:200],
            message=redact(text),
        )

    def wants_event(self, event: dict[str, Any]) -> bool:
        """True if ``event`` concerns a traced user or call (forwarded while debugging)."""
        call_id = event.get("call_id")
        user = event.get("user")
        users = {str(user).lower()} if user else set()
        return self._match(str(call_id) if call_id else None, users) is not None


def _identify(head: str) -> tuple[str | None, set[str]]:
    """Call-ID and the users named in From, To and the request line of a message head."""
    call_id: str | None = None
    users: set[str] = set()
    first = head.split("\r\n", 1)[0]
    if not first.startswith("SIP/"):
        for match in _USER.finditer(first):
            users.update(_names(match))
    for match in _HEADER.finditer(head):
        name, value = match.group(1).lower(), match.group(2).strip()
        if name in ("call-id", "i"):
            call_id = call_id or value
        else:
            for user in _USER.finditer(value):
                users.update(_names(user))
    return call_id, users


def _names(match: re.Match[str]) -> tuple[str, str]:
    user, host = match.group(1).lower(), match.group(2).lower()
    return user, f"{user}@{host}"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


TRACER: Final = Tracer()
"""The process's tracer: the stack calls :meth:`Tracer.message` while it is active."""
