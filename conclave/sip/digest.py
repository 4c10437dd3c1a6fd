"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760).

Algorithms MD5, SHA-256 and (where the local OpenSSL has it) SHA-512-256, with
``qop=auth`` only: ``auth-int`` is never offered. There is no ``-sess`` variant
and no ``userhash``. Everything here is pure computation; the caller passes
``now`` and random salt bytes in, so nothing reads a clock or a random source.

Server flow for a request carrying ``Authorization`` (or ``Proxy-Authorization``):

1. ``creds = parse_credentials(value)``. :class:`UnsupportedScheme` means "no
   usable credentials": answer 401/407 with a fresh challenge, exactly as if the
   header were absent. Any other :class:`RemoteProtocolError` gets its status (400).
2. Ignore credentials whose ``realm`` is not ours (RFC 3261 §22.4: they may be
   meant for another proxy). Answer 400 when ``creds.uri`` does not match the
   Request-URI (RFC 7616 §3.4.6).
3. ``status = nonces.check(creds.nonce, now)``. INVALID: re-challenge without
   ``stale``.
4. Look up the stored HA1 for ``(creds.username, creds.algorithm)``; if there is
   none, or ``verify_response(creds, ha1, method)`` is false, re-challenge
   without ``stale`` (RFC 7616 §3.3 says stale is only for a *valid* digest).
5. STALE, or ``counter.accept(creds.nonce, creds.nc)`` false: the user knows the
   password but the nonce is too old or was already used with this nc, so
   re-challenge with ``stale=true`` and the client retries without prompting.
   Call ``accept`` only after step 4, so unauthenticated peers cannot burn
   nonce-counts of a legitimate nonce or fill the table.

RFC 8760 §2.4: a server offering several algorithms sends one challenge per
algorithm, most preferred (SHA-256) first.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import heapq
import hmac
import math
import re
import struct
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError
from .grammar import QUOTED_STRING, TOKEN, quote, unquote
from .limits import MAX_DIGEST_NONCES, MAX_LINE_LENGTH, MAX_PARAMS


class UnsupportedScheme(RemoteProtocolError):
    """Credentials or a challenge this module cannot use, though not malformed.

    Raised for a scheme other than Digest (``Basic``, ``NTLM``, ...), and for a
    Digest algorithm or qop we do not implement. A server treats it as "no usable
    credentials" and re-challenges (status hint 401); a client gives up on that
    challenge. It is a :class:`RemoteProtocolError`, so code that only knows the
    base class still answers something sensible.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 401)


# RFC 7616 §6.1 algorithm names mapped to hashlib names. Our names are canonical;
# input is matched case-insensitively.
_HASHLIB_NAMES = {"SHA-256": "sha256", "SHA-512-256": "sha512_256", "MD5": "md5"}


def _available(name: str) -> bool:
    try:
        hashlib.new(name)
    except ValueError:
        return False
    return True


ALGORITHMS: tuple[str, ...] = tuple(a for a, h in _HASHLIB_NAMES.items() if _available(h))
"""Supported algorithms, most preferred first (RFC 8760 §2.4 ordering)."""

_BY_LOWER = {a.lower(): a for a in ALGORITHMS}


def _octets(text: str) -> bytes:
    # The parser decodes header bytes with surrogateescape; undo that exactly so
    # the hash covers the octets the peer sent. A lone surrogate that cannot have
    # come from the parser still encodes (surrogatepass), so hashing never raises.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _check_algorithm(algorithm: str) -> str:
    if algorithm not in _HASHLIB_NAMES or algorithm not in ALGORITHMS:
        raise LocalProtocolError(f"unsupported digest algorithm {algorithm!r}")
    return _HASHLIB_NAMES[algorithm]


def _h(algorithm: str, *parts: str) -> str:
    """H(data) of RFC 7616 §3.4.1 over ``parts`` joined by ``:``, as lowercase hex."""
    return hashlib.new(_check_algorithm(algorithm), _octets(":".join(parts))).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2).

    Store this instead of the password, one value per algorithm (see
    :func:`ha1_by_algorithm`). It depends on the realm, so renaming a realm
    invalidates stored HA1 values.
    """
    return _h(algorithm, username, realm, password)


def ha1_by_algorithm(username: str, realm: str, password: str) -> dict[str, str]:
    """HA1 for every supported algorithm, for provisioning a user's credentials."""
    return {a: compute_ha1(username, realm, password, a) for a in ALGORITHMS}


def compute_response(
    *,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str,
    qop: str | None,
    nc: int | None,
    cnonce: str | None,
) -> str:
    """The request-digest (RFC 7616 §3.4.1, RFC 3261 §22.4).

    With ``qop="auth"``: H(HA1:nonce:nc:cnonce:qop:H(method:uri)), ``nc`` as 8
    lowercase hex digits. With ``qop=None`` the RFC 2069 form H(HA1:nonce:HA2),
    which clients must still speak (RFC 3261 §22.4) but our server never accepts.
    """
    ha2 = _h(algorithm, method, uri)
    if qop is None:
        return _h(algorithm, ha1, nonce, ha2)
    if qop != "auth":
        raise LocalProtocolError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise LocalProtocolError("qop=auth needs nc and cnonce")
    return _h(algorithm, ha1, nonce, _format_nc(nc), cnonce, qop, ha2)


def _format_nc(nc: int) -> str:
    if not 0 <= nc <= 0xFFFFFFFF:
        raise LocalProtocolError("nc must fit in 8 hex digits")
    return f"{nc:08x}"


def verify_response(credentials: Credentials, ha1: str, method: str) -> bool:
    """True when ``credentials.response`` is right for ``ha1`` and ``method``.

    ``ha1`` is the stored value for ``credentials.algorithm`` (lowercase hex, as
    :func:`compute_ha1` returns it). Only ``qop=auth`` credentials can pass: without
    nc and cnonce there is no replay protection. The comparison is constant time.
    This checks the arithmetic only; the nonce, nc, realm and uri checks are the
    caller's (see the module docstring).
    """
    c = credentials
    if c.qop != "auth" or c.cnonce is None or c.algorithm not in ALGORITHMS:
        return False
    if c.nc is None or not 0 <= c.nc <= 0xFFFFFFFF:
        return False
    expected = compute_response(
        ha1=ha1,
        method=method,
        uri=c.uri,
        nonce=c.nonce,
        algorithm=c.algorithm,
        qop=c.qop,
        nc=c.nc,
        cnonce=c.cnonce,
    )
    return hmac.compare_digest(expected.encode("ascii"), _octets(c.response.lower()))


# --------------------------------------------------------------------------- header values


def _q(text: str) -> str:
    # quote() escapes '"' and '\' only; CR or LF would let a value inject headers.
    if any(c in text for c in "\r\n\x00"):
        raise LocalProtocolError("CR, LF or NUL in a digest parameter")
    return quote(text)


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge, the value of WWW-Authenticate / Proxy-Authenticate.

    ``qop`` is ``"auth"`` or, only when parsed from an old RFC 2069 server, None.
    """

    realm: str
    nonce: str
    algorithm: str
    qop: str | None = "auth"
    opaque: str | None = None
    stale: bool = False

    def __post_init__(self) -> None:
        _check_algorithm(self.algorithm)
        if self.qop not in ("auth", None):
            raise LocalProtocolError(f"unsupported qop {self.qop!r}")

    def to_header_value(self) -> str:
        """Render as ``Digest realm="...", nonce="...", algorithm=..., qop="auth", ...``."""
        parts = [f"realm={_q(self.realm)}", f"nonce={_q(self.nonce)}"]
        parts.append(f"algorithm={self.algorithm}")
        if self.qop is not None:
            parts.append(f'qop="{self.qop}"')  # RFC 7616 §3.3: qop-options is quoted
        if self.opaque is not None:
            parts.append(f"opaque={_q(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials, the value of Authorization / Proxy-Authorization.

    ``algorithm`` is one of :data:`ALGORITHMS` when parsed; ``qop`` is ``"auth"``
    or None; ``nc`` and ``cnonce`` are present exactly when ``qop`` is.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: int | None = None

    def to_header_value(self) -> str:
        """Render as ``Digest username="...", realm="...", ...`` (RFC 7616 §3.4)."""
        parts = [
            f"username={_q(self.username)}",
            f"realm={_q(self.realm)}",
            f"nonce={_q(self.nonce)}",
            f"uri={_q(self.uri)}",
            f"response={_q(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_q(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_q(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")  # message-qop is a bare token
        if self.nc is not None:
            parts.append(f"nc={_format_nc(self.nc)}")
        return "Digest " + ", ".join(parts)


#   challenge/credentials = "Digest" LWS digest-cln *(COMMA digest-cln)
#   auth-param = token EQUAL ( token / quoted-string )        (RFC 3261 §25.1)
_SCHEME_RE = re.compile(rf"[ \t]*({TOKEN})(?:[ \t]+|\Z)")
_PARAM_RE = re.compile(rf"({TOKEN})[ \t]*=[ \t]*(?:({QUOTED_STRING})|({TOKEN}))")
_OPEN_QUOTE_RE = re.compile(rf"{TOKEN}[ \t]*=[ \t]*\"")
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")


def _parse_params(value: str, kind: str) -> dict[str, str]:
    """Split a Digest header value into lowercase names and unquoted values."""
    if len(value) > MAX_LINE_LENGTH:
        raise RemoteProtocolError(f"{kind} too long")
    m = _SCHEME_RE.match(value)
    if m is None:
        raise RemoteProtocolError(f"malformed {kind}: no auth scheme")
    if m.group(1).lower() != "digest":
        raise UnsupportedScheme(f"{kind} use scheme {m.group(1)!r}, not Digest")
    params: dict[str, str] = {}
    pos, n = m.end(), len(value)
    need_comma = False
    while pos < n:
        c = value[pos]
        if c in " \t":
            pos += 1
            continue
        if c == ",":  # empty list elements are allowed (RFC 9110 §5.6.1)
            need_comma = False
            pos += 1
            continue
        if need_comma:
            raise RemoteProtocolError(f"malformed {kind}: expected ',' between parameters")
        p = _PARAM_RE.match(value, pos)
        if p is None:
            if _OPEN_QUOTE_RE.match(value, pos):
                raise RemoteProtocolError(f"malformed {kind}: bad or unterminated quoted string")
            raise RemoteProtocolError(f"malformed {kind} parameter")
        name = p.group(1).lower()
        if name in params:
            raise RemoteProtocolError(f"duplicate {name!r} in {kind}")
        if len(params) >= MAX_PARAMS:
            raise RemoteProtocolError(f"too many parameters in {kind}")
        quoted = p.group(2)
        params[name] = unquote(quoted) if quoted is not None else p.group(3)
        pos = p.end()
        need_comma = True
    return params


def _algorithm(params: dict[str, str], kind: str) -> str:
    raw = params.get("algorithm", "MD5")  # RFC 7616 §3.3: absent means MD5
    algorithm = _BY_LOWER.get(raw.lower())
    if algorithm is None:
        raise UnsupportedScheme(f"{kind} use unsupported algorithm {raw!r}")
    return algorithm


def _required(params: dict[str, str], name: str, kind: str) -> str:
    value = params.get(name)
    if value is None:
        raise RemoteProtocolError(f"{kind} lack {name!r}")
    return value


def parse_challenge(value: str) -> Challenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value (RFC 7616 §3.3).

    Raises :class:`UnsupportedScheme` for another scheme, an unknown algorithm or a
    qop list without ``auth``; :class:`RemoteProtocolError` when malformed.
    Unknown parameters (domain, charset, userhash, ...) are ignored.
    """
    kind = "challenge"
    params = _parse_params(value, kind)
    realm = _required(params, "realm", kind)
    nonce = _required(params, "nonce", kind)
    algorithm = _algorithm(params, kind)
    qop: str | None = None
    if "qop" in params:
        options = {o.strip().lower() for o in params["qop"].split(",")}
        if "auth" not in options:
            raise UnsupportedScheme(f"challenge offers qop {params['qop']!r}, not auth")
        qop = "auth"
    stale = params.get("stale", "false").lower() == "true"
    return Challenge(realm, nonce, algorithm, qop, params.get("opaque"), stale)


def parse_credentials(value: str) -> Credentials:
    """Parse an Authorization / Proxy-Authorization value (RFC 7616 §3.4).

    Raises :class:`UnsupportedScheme` (re-challenge; see the module docstring) for
    another scheme, an unknown algorithm or a qop other than ``auth``, and
    :class:`RemoteProtocolError` (answer 400) for malformed values: missing
    username/realm/nonce/uri/response, duplicate parameters, nc that is not 8 hex
    digits, qop without nc or cnonce, unterminated quotes. Never raises anything else.
    """
    kind = "credentials"
    params = _parse_params(value, kind)
    username = _required(params, "username", kind)
    realm = _required(params, "realm", kind)
    nonce = _required(params, "nonce", kind)
    uri = _required(params, "uri", kind)
    response = _required(params, "response", kind)
    algorithm = _algorithm(params, kind)
    qop = params.get("qop")
    cnonce = params.get("cnonce")
    nc_text = params.get("nc")
    nc: int | None = None
    if qop is not None:
        qop = qop.lower()
        if qop != "auth":
            raise UnsupportedScheme(f"credentials use unsupported qop {qop!r}")
        if cnonce is None or nc_text is None:
            raise RemoteProtocolError("credentials with qop lack cnonce or nc")
    elif cnonce is not None or nc_text is not None:
        raise RemoteProtocolError("credentials carry cnonce or nc without qop")
    if nc_text is not None:
        if _NC_RE.fullmatch(nc_text) is None:  # nc-value = 8LHEX
            raise RemoteProtocolError("nc is not 8 hex digits")
        nc = int(nc_text, 16)
    return Credentials(
        username, realm, nonce, uri, response, algorithm, cnonce, params.get("opaque"), qop, nc
    )


def authorization_value(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int,
) -> str:
    """Client side: the Authorization value answering ``challenge`` (RFC 3261 §22.2).

    ``uri`` is the Request-URI, ``cnonce`` a fresh random string the caller
    chooses, and ``nc`` counts requests sent with this nonce, starting at 1. For a
    challenge without qop (RFC 2069) ``cnonce`` and ``nc`` are not used.
    """
    qop = challenge.qop
    nc_, cnonce_ = (nc, cnonce) if qop else (None, None)
    response = compute_response(
        ha1=compute_ha1(username, challenge.realm, password, challenge.algorithm),
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_,
        cnonce=cnonce_,
    )
    return Credentials(
        username, challenge.realm, challenge.nonce, uri, response, challenge.algorithm,
        cnonce_, challenge.opaque, qop, nc_,
    ).to_header_value()  # fmt: skip


# --------------------------------------------------------------------------- nonces

# nonce = base64url( issue-time || salt || HMAC-SHA256(secret, label || issue-time || salt) )
# issue-time is whole milliseconds as an unsigned 64-bit big-endian integer.
_LABEL = b"conclave/sip digest nonce v1\x00"  # keeps the secret's MACs single-purpose
_TIME = struct.Struct(">Q")
_MAC_SIZE = 32
_MIN_SALT = 8  # below 64 random bits, salts of concurrent nonces could collide
_MAX_SALT = 32
_MIN_RAW = _TIME.size + _MIN_SALT + _MAC_SIZE
_MAX_RAW = _TIME.size + _MAX_SALT + _MAC_SIZE
_MAX_NONCE_CHARS = (_MAX_RAW * 4 + 2) // 3
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")


class NonceStatus(enum.Enum):
    """What :meth:`NonceFactory.check` found."""

    VALID = "valid"
    """Issued by us and within its lifetime."""
    STALE = "stale"
    """Issued by us but expired: answer with ``stale=true`` (RFC 7616 §3.3)."""
    INVALID = "invalid"
    """Not ours: forged, truncated, or not a nonce at all."""


def _millis(now: float) -> int:
    if not math.isfinite(now) or now < 0:
        raise LocalProtocolError("now must be a finite, non-negative number of seconds")
    return math.floor(now * 1000)


def _decode_nonce(nonce: str) -> bytes | None:
    """The raw octets of a well-formed nonce, or None. Exactly one string per nonce."""
    if len(nonce) > _MAX_NONCE_CHARS or _B64URL_RE.fullmatch(nonce) is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (binascii.Error, ValueError):
        return None
    # Reject non-canonical spellings (unused trailing bits set): otherwise one nonce
    # would have several names, and each name would get its own nonce-count.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != nonce:
        return None
    if not _MIN_RAW <= len(raw) <= _MAX_RAW:
        return None
    return raw


class NonceFactory:
    """Stateless nonces: issue time plus an HMAC, so no server-side table is needed.

    ``secret`` must be at least 16 random octets. A per-process random secret is
    simplest (every nonce dies with the process, and clients re-authenticate
    once). Front End pool members that share a secret must also share a clock
    that does not step backwards: a nonce issued "in the future" checks as STALE.
    """

    def __init__(self, secret: bytes, lifetime: float) -> None:
        if len(secret) < 16:
            raise LocalProtocolError("nonce secret must be at least 16 octets")
        if not (math.isfinite(lifetime) and lifetime > 0):
            raise LocalProtocolError("nonce lifetime must be a positive number of seconds")
        self._secret = bytes(secret)
        self._lifetime_ms = math.floor(lifetime * 1000)

    def _mac(self, head: bytes, bound_to: str) -> bytes:
        # The binding is MACed but not carried: only a request that presents
        # the same binding (e.g. the same source address) can use the nonce.
        bind = bound_to.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, _LABEL + head + b"\x00" + bind, hashlib.sha256).digest()

    def make(self, now: float, salt: bytes, *, bound_to: str = "") -> str:
        """A new nonce issued at ``now``. ``salt``: 8-32 fresh random octets.

        ``bound_to`` ties the nonce to something the caller can check again
        when the nonce comes back (the source address of a UDP request, so a
        request with a forged source cannot use a nonce sent to someone else);
        pass the same value to :meth:`check`.
        """
        if not _MIN_SALT <= len(salt) <= _MAX_SALT:
            raise LocalProtocolError(f"salt must be {_MIN_SALT}-{_MAX_SALT} octets")
        head = _TIME.pack(_millis(now)) + bytes(salt)
        raw = head + self._mac(head, bound_to)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, nonce: str, now: float, *, bound_to: str = "") -> NonceStatus:
        """Classify ``nonce`` at time ``now``; never raises on what the peer sent.

        A nonce made with another ``bound_to`` is INVALID."""
        raw = _decode_nonce(nonce)
        if raw is None:
            return NonceStatus.INVALID
        head, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
        if not hmac.compare_digest(mac, self._mac(head, bound_to)):
            return NonceStatus.INVALID
        (issued,) = _TIME.unpack_from(head)
        age = _millis(now) - issued
        if age < 0 or age > self._lifetime_ms:
            return NonceStatus.STALE
        return NonceStatus.VALID


class NonceCounter:
    """Replay protection: each nonce-count is accepted at most once per nonce.

    Theory of operation (RFC 7616 §3.4, nc). For every nonce that has
    authenticated a request, remember the highest nc seen; accept only a
    strictly higher one (gaps are fine: the client may have used numbers on
    requests we never saw). UDP retransmissions reuse the nc but are absorbed
    by the transaction layer before they get here.

    Memory is bounded by ``max_entries``. When full, the entry with the oldest
    *issue time* (decoded from the nonce) is forgotten, and the *watermark*
    rises to that issue time. A nonce not in the table is accepted only if it
    was issued after the watermark: every nonce that was ever accepted and then
    forgotten was issued at or before it, so a forgotten nonce can never come
    back with its counter reset. The cost is that an old but still valid nonce
    is refused, and the client gets 401 with ``stale=true``.

    ``not_before`` starts the watermark: pass the current time when the
    :class:`NonceFactory` secret outlives this process (shared by a pool, or
    persisted), so nonces accepted before a restart cannot be replayed after
    it. With a per-process secret the default is safe.

    Call :meth:`accept` only for a nonce that :meth:`NonceFactory.check` found
    VALID and credentials that :func:`verify_response` accepted: it trusts the
    issue time inside the nonce. The table is per process; a pool must send a
    client's requests to the member that issued its nonce, or re-challenge.
    """

    def __init__(
        self, max_entries: int = MAX_DIGEST_NONCES, *, not_before: float = -math.inf
    ) -> None:
        if max_entries < 1:
            raise LocalProtocolError("max_entries must be at least 1")
        self._max = max_entries
        self._last: dict[str, int] = {}
        self._by_issue: list[tuple[int, str]] = []  # heap, same keys as _last
        self._watermark = -1 if not_before == -math.inf else _millis(not_before)

    def __len__(self) -> int:
        return len(self._last)

    def accept(self, nonce: str, nc: int) -> bool:
        """Record ``nc`` for ``nonce``; False if it is a replay or cannot be proven new."""
        if not 1 <= nc <= 0xFFFFFFFF:
            return False
        last = self._last.get(nonce)
        if last is not None:
            if nc <= last:
                return False
            self._last[nonce] = nc
            return True
        raw = _decode_nonce(nonce)
        if raw is None:
            return False
        (issued,) = _TIME.unpack_from(raw)
        if issued <= self._watermark:
            return False
        self._last[nonce] = nc
        heapq.heappush(self._by_issue, (issued, nonce))
        if len(self._last) > self._max:
            old_issued, old = heapq.heappop(self._by_issue)
            del self._last[old]
            self._watermark = max(self._watermark, old_issued)
        return True
