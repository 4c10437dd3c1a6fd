"""The registrar (RFC 3261 §10.3) for requests the core has already authenticated.

:meth:`Registrar.handle` turns one REGISTER into one response. It is pure: no
asyncio, no database, no clock. It reads and changes bindings only through the
synchronous :class:`~conclave.services.location.LocationService`, so tests
drive it with a stepped ``now``.

Processing follows the numbered steps of §10.3. Steps 1 (is the Request-URI
ours?) and 3 (authentication) belong to the core's router and authenticator;
the rest is here:

2. ``Require`` must name only extensions we support, else 420 with
   ``Unsupported`` (§8.2.2.3).
4. Authorisation: the To user must be the authenticated user, else 403.
5. The To URI must be an address of record in our domain, else 404. It is
   canonicalised with :func:`~conclave.sip.address.aor_of`.
6. Every Contact is parsed and validated before anything changes (the request
   is all-or-nothing, §10.3): syntax, ``*`` only alone and with ``Expires: 0``,
   q-values, expiry (``expires`` parameter, else the Expires header, else the
   default; 0 removes; below the minimum is 423 with ``Min-Expires``; above
   the maximum is reduced to it), at most ``max_contacts``.
7. The location service applies the whole change atomically, including the
   Call-ID/CSeq rule: for a binding with the same Call-ID the CSeq must be
   higher, otherwise "the update MUST be aborted and the request fails". We
   answer that with **500**, the code RFC 3261 §12.2.2 prescribes for an
   out-of-order request in a dialog: the request is well formed (so 400
   would be wrong), it merely arrived late, and its newer sibling has already
   been applied.
8. 200 OK lists every current binding with its ``expires`` (and ``q`` when not
   1) and carries a ``Date`` (§10.3 step 8, §20.17).

Extensions: RFC 5626 outbound (``+sip.instance`` and ``reg-id`` are kept, and a
REGISTER with ``Supported: outbound`` and a ``reg-id`` gets ``Require:
outbound``) and RFC 3327 Path (stored with the bindings, echoed to a client
that lists ``path`` in Supported).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from email.utils import formatdate
from typing import TYPE_CHECKING

import structlog

from conclave.core.features import Exchange, Feature, FeatureHost
from conclave.core.stack import SipStack
from conclave.sip.address import NameAddr, SharedNameAddr, aor_of, parse_name_addr
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.fields import parse_expires
from conclave.sip.flow import Flow
from conclave.sip.ids import new_tag
from conclave.sip.limits import MAX_CSEQ
from conclave.sip.message import Request, Response, make_response
from conclave.sip.uri import SipURI

from .location import (
    MAX_CALL_ID_LENGTH,
    MAX_CONTACT_URI_LENGTH,
    MAX_INSTANCE_ID_LENGTH,
    ContactUpdate,
    LocationError,
    LocationService,
    OutOfOrder,
    RegisterChange,
    TooManyBindings,
)

if TYPE_CHECKING:
    from .setup import Setup

log = structlog.get_logger("conclave.registrar")

SUPPORTED_EXTENSIONS = frozenset({"outbound", "path"})
"""Option tags a REGISTER may list in Require (RFC 5626, RFC 3327)."""

#   qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )   (RFC 3261 §25.1)
_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
#   reg-id = "reg-id" EQUAL 1*DIGIT ; 1 to (2^31 - 1)   (RFC 5626 §4.2)
_REG_ID_RE = re.compile(r"[0-9]{1,10}")


class _Reject(Exception):
    """Stop processing and answer ``status``; nothing has been changed."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def _bad(reason: str) -> _Reject:
    return _Reject(400, reason)


def format_q(q: float) -> str:
    """A q-value as written on the wire: at most three decimals, no trailing zeros."""
    text = f"{q:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def http_date(now: float) -> str:
    """``now`` as an RFC 1123 date in GMT, as the Date header wants (RFC 3261 §20.17)."""
    return formatdate(now, usegmt=True)


def _tokens(request: Request, header: str) -> set[str]:
    return {t.strip().lower() for v in request.headers.get_all(header) for t in v.split(",")} - {""}


class Registrar:
    """Answers REGISTER requests from authenticated local users of ``domain``."""

    def __init__(
        self,
        location: LocationService,
        *,
        domain: str,
        min_expires: int = 60,
        default_expires: int = 3600,
        max_expires: int = 86400,
        max_contacts: int = 10,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        if max_contacts < 1:
            raise ValueError("max_contacts must be at least 1")
        self.location = location
        self.domain = domain.lower().rstrip(".")
        self.min_expires = min_expires
        self.default_expires = default_expires
        self.max_expires = max_expires
        self.max_contacts = max_contacts

    def handle(
        self, request: Request, *, user: str, flow: Flow, now: float, to_tag: str
    ) -> Response:
        """Process an authenticated REGISTER from ``user`` that arrived on ``flow``.

        Returns the final response, tagged with ``to_tag``; the caller sends
        it on the server transaction. Any binding changes have been applied
        (and listeners called) by the time this returns.
        """
        if request.method != "REGISTER":
            raise ValueError(f"the registrar handles REGISTER, not {request.method}")
        try:
            return self._handle(request, user=user, flow=flow, now=now, to_tag=to_tag)
        except _Reject as reject:
            return make_response(
                request, reject.status, reject.reason, to_tag=to_tag, headers=reject.headers
            )
        except RemoteProtocolError as exc:
            return make_response(
                request, exc.status, exc.reason, to_tag=to_tag, headers=exc.headers
            )

    # --- the steps of §10.3 ---------------------------------------------------

    def _handle(
        self, request: Request, *, user: str, flow: Flow, now: float, to_tag: str
    ) -> Response:
        unsupported = sorted(_tokens(request, "Require") - SUPPORTED_EXTENSIONS)
        if unsupported:
            raise _Reject(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
        aor = self._aor(request, user)
        call_id, cseq = self._call_id_and_cseq(request)
        contacts = request.contacts
        if not contacts:
            # §10.3 step 6: no Contact is a query; answer with what is bound.
            return self._ok(request, aor, now, to_tag)
        change = self._change(request, contacts, flow=flow, call_id=call_id, cseq=cseq)
        try:
            self.location.apply(aor, change, now, max_contacts=self.max_contacts)
        except OutOfOrder as exc:
            raise _Reject(500, "Out-of-order REGISTER (CSeq not above stored)") from exc
        except TooManyBindings as exc:
            raise _Reject(403, f"Too many contacts (at most {self.max_contacts})") from exc
        except LocationError as exc:  # another implementation's own refusal
            raise _Reject(500, str(exc)[:100] or "Location service refused the change") from exc
        extra: list[tuple[str, str]] = []
        supported = _tokens(request, "Supported")
        if "outbound" in supported and any(u.reg_id is not None for u in change.updates):
            extra.append(("Require", "outbound"))  # RFC 5626 §6
        if "path" in supported:
            extra.extend(("Path", p) for p in change.path)  # RFC 3327 §5.3
        return self._ok(request, aor, now, to_tag, extra)

    def _aor(self, request: Request, user: str) -> str:
        if request.headers.get("To") is None:
            raise _bad("missing To header")
        uri = request.to_addr.uri
        if not isinstance(uri, SipURI) or uri.user is None:
            raise _Reject(404, "To is not an address of record")
        if uri.host.lower().rstrip(".") != self.domain:
            raise _Reject(404, "Not a domain of this registrar")
        if uri.user != user:
            # §10.3 step 4: a user may register only its own address.
            raise _Reject(403, "Not allowed to register this address")
        return aor_of(uri)

    @staticmethod
    def _call_id_and_cseq(request: Request) -> tuple[str, int]:
        call_id = request.call_id
        if not call_id:
            raise _bad("missing Call-ID header")
        if len(call_id) > MAX_CALL_ID_LENGTH:
            raise _bad(f"Call-ID longer than {MAX_CALL_ID_LENGTH} characters")
        if request.headers.get("CSeq") is None:
            raise _bad("missing CSeq header")
        cseq = request.cseq
        if cseq.method != "REGISTER":
            raise _bad("CSeq method does not match REGISTER")
        return call_id, cseq.seq

    def _change(
        self,
        request: Request,
        contacts: Sequence[NameAddr | SharedNameAddr | None],
        *,
        flow: Flow,
        call_id: str,
        cseq: int,
    ) -> RegisterChange:
        expires_value = request.headers.get("Expires")
        header_expires = parse_expires(expires_value) if expires_value is not None else None
        parsed = list(contacts)  # shared, read-only views: _update copies what it keeps
        path = tuple(self._path(request))
        user_agent = request.headers.get("User-Agent")
        if any(na is None for na in parsed):
            # §10.2.2: "*" only alone, only with Expires: 0, and it has no params.
            if len(parsed) != 1 or header_expires != 0:
                raise _bad("Contact: * must be the only Contact and needs Expires: 0")
            return RegisterChange(
                call_id, cseq, flow, remove_all=True, path=path, user_agent=user_agent
            )
        if len(parsed) > self.max_contacts:
            raise _Reject(403, f"Too many contacts (at most {self.max_contacts})")
        updates: list[ContactUpdate] = []
        too_brief = False
        for na in parsed:
            assert na is not None
            update = self._update(na, header_expires)
            too_brief = too_brief or 0 < update.expires < self.min_expires
            if any(u.uri.equivalent(update.uri) for u in updates):
                raise _bad(f"duplicate Contact {update.uri}")
            updates.append(update)
        if sum(1 for u in updates if u.reg_id is not None and u.expires > 0) > 1:
            # RFC 5626 §6: one REGISTER registers one flow.
            raise _bad("more than one Contact with reg-id")
        if too_brief:
            raise _Reject(423, "Interval Too Brief", (("Min-Expires", str(self.min_expires)),))
        updates = [
            u if u.expires <= self.max_expires else replace(u, expires=self.max_expires)
            for u in updates
        ]
        return RegisterChange(call_id, cseq, flow, tuple(updates), path=path, user_agent=user_agent)

    def _update(self, na: NameAddr | SharedNameAddr, header_expires: int | None) -> ContactUpdate:
        uri = na.uri
        if not isinstance(uri, SipURI):
            raise _bad(f"Contact URI scheme {uri.scheme!r} is not sip or sips")
        if len(str(uri)) > MAX_CONTACT_URI_LENGTH:
            raise _bad(f"Contact URI longer than {MAX_CONTACT_URI_LENGTH} characters")
        params = na.params
        expires = header_expires
        if "expires" in params:
            value = params.get("expires")
            if value is None:
                raise _bad("Contact expires parameter has no value")
            expires = parse_expires(value)
        if expires is None:
            expires = self.default_expires
        q = 1.0
        if "q" in params:
            q_text = params.get("q")
            if q_text is None or _QVALUE_RE.fullmatch(q_text) is None:
                raise _bad(f"invalid q-value {q_text!r} (must be 0 to 1)")
            q = float(q_text)
        instance_id = None
        if "+sip.instance" in params:
            instance_id = params.unquoted("+sip.instance")
            if not instance_id or len(instance_id) > MAX_INSTANCE_ID_LENGTH:
                raise _bad("invalid +sip.instance")
        reg_id = None
        if "reg-id" in params:
            text = params.get("reg-id")
            if text is None or _REG_ID_RE.fullmatch(text) is None or not 0 < int(text) <= MAX_CSEQ:
                raise _bad("invalid reg-id (must be 1 to 2**31-1)")
            # RFC 5626 §6: a reg-id means nothing without an instance id.
            reg_id = int(text) if instance_id is not None else None
        kept = na.copy()
        kept.params.remove("expires")
        kept.params.remove("q")
        kept.angle = True
        return ContactUpdate(uri, str(kept), expires, q, instance_id, reg_id)

    @staticmethod
    def _path(request: Request) -> list[str]:
        values = request.headers.get_all("Path")
        for value in values:
            parse_name_addr(value, angle_required=True)  # RFC 3327 §4: name-addr only
        return [v.strip() for v in values]

    def _ok(
        self,
        request: Request,
        aor: str,
        now: float,
        to_tag: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> Response:
        headers: list[tuple[str, str]] = []
        for contact in self.location.bindings(aor, now):
            value = f"{contact.contact};expires={contact.expires_in(now)}"
            if contact.q != 1.0:
                value += f";q={format_q(contact.q)}"
            headers.append(("Contact", value))
        headers.extend(extra or ())
        headers.append(("Date", http_date(now)))
        return make_response(request, 200, to_tag=to_tag, headers=tuple(headers))


class RegistrarFeature(Feature):
    """The registrar as a feature: it owns REGISTER (§10.3)."""

    name = "registrar"

    def __init__(
        self, registrar: Registrar, stack: SipStack, clock: Callable[[], float] = time.time
    ) -> None:
        self.registrar = registrar
        self.stack = stack
        self.clock = clock

    def register(self, host: FeatureHost) -> None:
        host.registry.owns("REGISTER", self.handle)

    def handle(self, exchange: Exchange) -> None:
        assert exchange.user is not None  # the router authenticated it
        response = self.registrar.handle(
            exchange.request,
            user=exchange.user,
            flow=exchange.flow,
            now=self.clock(),
            to_tag=new_tag(),
        )
        log.info("register", user=exchange.user, status=response.status)
        self.stack.send_response(exchange.txn, response)


def build(setup: Setup) -> Feature:
    """Always on: a server that serves users registers them."""
    c = setup.config
    registrar = Registrar(
        setup.location,
        domain=c.server.domain,
        min_expires=c.registrar.min_expires,
        default_expires=c.registrar.default_expires,
        max_expires=c.registrar.max_expires,
        max_contacts=c.registrar.max_contacts_per_aor,
    )
    return RegistrarFeature(registrar, setup.host.stack)
