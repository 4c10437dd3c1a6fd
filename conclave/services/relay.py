"""Media relay credentials: time-limited TURN credentials for signed-in users.

Calls between a user on the internet and anyone else need a media relay
(TURN, RFC 8656) that both can reach; in Lync the Edge's A/V service was
that relay and the Front End's Media Relay Authentication Service (MRAS)
handed out credentials for it. Conclave's relay is coturn, run with
``use-auth-secret`` (``conclave topology publish`` writes its configuration
for each edge), and this feature is the MRAS: it hands a signed-in user
credentials in coturn's "TURN REST API" scheme, which coturn checks with the
secret both share and no database:

* username ``EXPIRY:USER`` (EXPIRY in Unix seconds),
* password ``base64(HMAC-SHA1(secret, username))``.

They expire by themselves; nobody can make a valid one without the secret,
or stretch one's lifetime (the expiry is inside what is signed).

Over SIP the request is Lync's: a ``SERVICE`` request to the user's own
address with an ``application/msrtc-media-relay-auth+xml`` body
(``<request><credentialsRequest>...``, [MS-AVEDGEA] §2.2.2), answered 200 with
the credentials and the relays. Only the signed-in user, for themselves:
another identity is 403. :func:`relay_credentials` is the same function for
the web API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from conclave.core.features import Exchange, Feature, FeatureHost
from conclave.core.stack import SipStack
from conclave.pki.files import shared_secret
from conclave.sip.address import aor_of
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.uri import parse_uri

if TYPE_CHECKING:
    from .setup import Setup

log = structlog.get_logger("conclave.services.relay")

CONTENT_TYPE: Final = "application/msrtc-media-relay-auth+xml"
NAMESPACE: Final = "http://schemas.microsoft.com/2006/09/sip/mrasp"
MAX_REQUEST_BODY: Final = 4096
"""Octets of a credentials request: a real one is a few hundred; more is refused
before any XML is parsed."""
SECRET_BYTES: Final = 32
"""Random octets in a secret this feature makes (hex-encoded in the file)."""
MIN_SECRET_CHARS: Final = 16
"""A shorter shared secret is refused: HMAC keys must not be guessable."""
MAX_ID_CHARS: Final = 64
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RelayRequestError(ValueError):
    """A credentials request that cannot be answered: status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class RelayCredentials:
    username: str
    password: str
    expires: int
    """Unix seconds"""
    lifetime: int
    """seconds, as given"""


def relay_credentials(secret: bytes, user: str, now: float, lifetime: float) -> RelayCredentials:
    """coturn's REST-API credentials for ``user``, valid ``lifetime`` seconds from ``now``."""
    expires = int(now + lifetime)
    username = f"{expires}:{user}"
    digest = hmac.new(secret, username.encode("utf-8"), hashlib.sha1).digest()
    return RelayCredentials(username, base64.b64encode(digest).decode(), expires, int(lifetime))


def load_secret(path: Path) -> bytes:
    """The shared secret in ``path``, made (mode 0600) when there is none yet."""
    made = not path.exists()
    secret = shared_secret(path, SECRET_BYTES)
    if made:
        log.info("media relay secret created", path=str(path))
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"{path}: the relay secret must be at least {MIN_SECRET_CHARS} characters")
    return secret.encode("utf-8")


@dataclass(frozen=True)
class CredentialsRequest:
    request_id: str
    credentials_request_id: str
    identity: str
    minutes: int | None


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def parse_request(body: bytes) -> CredentialsRequest:
    """The MRAS credentials request in ``body``; RelayRequestError when it is not one."""
    if len(body) > MAX_REQUEST_BODY:
        raise RelayRequestError(413, "Credentials request too large")
    if b"<!" in body:  # no DOCTYPE, no entities: nothing to expand
        raise RelayRequestError(400, "Credentials request must not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise RelayRequestError(400, "Credentials request is not well-formed XML") from None
    if root.tag != _q("request"):
        raise RelayRequestError(400, "Expected an MRAS request element")
    asked = root.find(_q("credentialsRequest"))
    if asked is None:
        raise RelayRequestError(400, "No credentialsRequest element")
    request_id = root.get("requestID", "")
    credentials_id = asked.get("credentialsRequestID", "")
    if not (_ID.fullmatch(request_id) and _ID.fullmatch(credentials_id)):
        raise RelayRequestError(400, "Missing or malformed requestID or credentialsRequestID")
    identity = (asked.findtext(_q("identity")) or "").strip()
    duration = (asked.findtext(_q("duration")) or "").strip()
    minutes = None
    if duration:
        if not duration.isdigit() or not 1 <= int(duration) <= 100_000:
            raise RelayRequestError(400, "Malformed duration")
        minutes = int(duration)
    return CredentialsRequest(request_id, credentials_id, identity, minutes)


def response_body(
    asked: CredentialsRequest, aor: str, credentials: RelayCredentials, servers: tuple[str, ...]
) -> bytes:
    """The MRAS response carrying ``credentials`` and the relays."""
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(
        _q("response"),
        {
            "requestID": asked.request_id,
            "version": "1.0",
            "serverVersion": "2",
            "to": aor,
            "from": aor,
            "reasonPhrase": "OK",
        },
    )
    answer = ET.SubElement(
        root, _q("credentialsResponse"), {"credentialsRequestID": asked.credentials_request_id}
    )
    creds = ET.SubElement(answer, _q("credentials"))
    ET.SubElement(creds, _q("username")).text = credentials.username
    ET.SubElement(creds, _q("password")).text = credentials.password
    ET.SubElement(creds, _q("duration")).text = str(credentials.lifetime // 60)
    relays = ET.SubElement(answer, _q("mediaRelayList"))
    for server in servers:
        host, _, port = server.rpartition(":")
        relay = ET.SubElement(relays, _q("mediaRelay"))
        ET.SubElement(relay, _q("location")).text = "internet"
        ET.SubElement(relay, _q("hostName")).text = host.strip("[]")
        ET.SubElement(relay, _q("udpPort")).text = port
        ET.SubElement(relay, _q("tcpPort")).text = port
    rendered: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return rendered


class MediaRelayFeature(Feature):
    """Owns SERVICE: media relay credentials for the signed-in user."""

    name = "media_relay"

    def __init__(
        self,
        stack: SipStack,
        secret: bytes,
        servers: tuple[str, ...],
        lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stack = stack
        self.secret = secret
        self.servers = servers
        self.lifetime = lifetime
        self.clock = clock

    def register(self, host: FeatureHost) -> None:
        host.registry.owns("SERVICE", self.handle)

    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        try:
            answer = self._answer(exchange)
        except RelayRequestError as exc:
            self.stack.respond(exchange.txn, exc.status, exc.reason)
            return
        self.stack.respond(exchange.txn, 200, headers=[("Content-Type", CONTENT_TYPE)], body=answer)
        log.info("media relay credentials issued", user=exchange.user, call_id=request.call_id)

    def _answer(self, exchange: Exchange) -> bytes:
        request = exchange.request
        if exchange.user is None or exchange.target != exchange.sender:
            raise RelayRequestError(403, "Credentials only for yourself, at your own address")
        kind = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != CONTENT_TYPE:
            raise RelayRequestError(415, "Unsupported Media Type")
        asked = parse_request(request.body)
        if asked.identity and _aor(asked.identity) != exchange.sender:
            raise RelayRequestError(403, "Credentials only for yourself")
        lifetime = self.lifetime
        if asked.minutes is not None:
            lifetime = min(lifetime, asked.minutes * 60.0)
        credentials = relay_credentials(self.secret, exchange.user, self.clock(), lifetime)
        return response_body(asked, exchange.sender, credentials, self.servers)


def _aor(identity: str) -> str | None:
    try:
        return aor_of(parse_uri(identity))
    except (ValueError, RemoteProtocolError):
        return None


def build(setup: Setup) -> MediaRelayFeature | None:
    """On when ``[media_relay] enabled``."""
    section = setup.config.media_relay
    if not section.enabled:
        return None
    secret = load_secret(setup.config.path(setup.data_dir, section.secret_file))
    return MediaRelayFeature(setup.host.stack, secret, section.servers, section.lifetime)
