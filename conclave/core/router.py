"""The Standard Edition's transaction user: who handles each request.

For every new request the router decides, in this order (RFC 3261 §16.3,
§16.4 and the Lync security model):

1. **Draining**: during a graceful stop, new out-of-dialog work gets 503.
2. **Loose routing**: our own Route entries are removed; the first one's
   user part names the dialog (:mod:`conclave.core.dialogs`).
3. **In-dialog requests** (To tag) travel only along a dialog we
   record-routed: its Call-ID, tags, From and To must be the dialog's, and it
   must arrive on the sender's recorded flow or authenticate as that party
   (407). It goes to the other party's recorded flow, or gets 430 if that
   flow is gone: never to a contact found from what the request says.
4. **Out-of-dialog requests**: unknown methods 501, disabled ones 405;
   requests to the server itself (REGISTER, OPTIONS); no relaying to other
   domains and no requests from them (federation is off: 403); digest
   authentication (401 for REGISTER, 407 otherwise); the authenticated user
   must be the From user (403); a user named in any case is the stored
   user (one canonical identity); a method owned by an enabled service
   (:mod:`conclave.core.service`, e.g. presence) goes to that service;
   otherwise the target: 404 for an unknown user, offline store (202) for
   a MESSAGE to an offline user, 480 for other requests to an offline
   user, else the proxy forks to every device.

Responses that match no transaction are dropped, except a 2xx to an INVITE
of a dialog we opened (:meth:`Proxy.on_stray_response`).

Nothing here awaits the database except storing an offline message, which
runs as its own task and answers when the write is durable. Likewise a
MESSAGE under an archiving policy is delivered by a task once its archive
record is durable (:mod:`conclave.services.archive`); outcomes go to the CDR
recorder (:mod:`conclave.services.cdr`), which writes in the background.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine, Sequence
from functools import partial

import structlog

from conclave.ops import metrics
from conclave.pki.identity import requires_tls
from conclave.services.archive import ArchiveService
from conclave.services.cdr import CdrRecorder
from conclave.services.im import OfflineMessages
from conclave.services.location import LocationService, aor_of
from conclave.services.registrar import Registrar
from conclave.sip.address import peek_name_addr
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.fields import parse_max_forwards
from conclave.sip.flow import Flow
from conclave.sip.ids import new_branch, new_tag
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response
from conclave.sip.transaction import ServerTransaction
from conclave.sip.uri import SipURI, TelURI
from conclave.sip.validate import check_extensions
from conclave.transport.guard import SourceGuard

from .auth import Authenticated, Authenticator, BadCredentials, CredentialCache
from .calls import CallTracker
from .dialogs import Hop, Refusal
from .proxy import Proxy, Target
from .service import SipService
from .stack import SipStack

log = structlog.get_logger("conclave.router")

ALLOWED_METHODS = (
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "UPDATE", "PRACK",
)  # fmt: skip
"""Methods the Standard Edition handles. Presence (SUBSCRIBE, NOTIFY, PUBLISH)
and REFER are added here only by the services that implement them."""

KNOWN_METHODS = frozenset((*ALLOWED_METHODS, "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER"))
"""Methods we know but have not enabled: 405 with Allow, not 501 (§21.4.6)."""

SUPPORTED = ("path", "outbound")

RETRY_AFTER_DRAINING = "30"


class Router:
    """Dispatches the stack's events for a Standard Edition server."""

    def __init__(
        self,
        *,
        stack: SipStack,
        proxy: Proxy,
        local: LocalEndpoint,
        auth: Authenticator,
        users: CredentialCache,
        registrar: Registrar,
        location: LocationService,
        im: OfflineMessages,
        guard: SourceGuard,
        is_open: Callable[[Flow], bool],
        udp_flow: Callable[[tuple[str, int]], Flow | None],
        services: Sequence[SipService] = (),
        wall_clock: Callable[[], float] = time.time,
        archive: ArchiveService | None = None,
        cdr: CdrRecorder | None = None,
        calls: CallTracker | None = None,
        client_cert_user: Callable[[Flow], str | None] | None = None,
    ) -> None:
        self.stack = stack
        self.proxy = proxy
        self.local = local
        self.auth = auth
        self.users = users
        self.registrar = registrar
        self.location = location
        self.im = im
        self.guard = guard
        self.is_open = is_open
        self.udp_flow = udp_flow
        self.dialogs = proxy.dialogs
        self.stray_dropped = 0
        self.clock = wall_clock
        self.archive = archive  # MESSAGEs under policy are archived before delivery
        self.cdr = cdr  # call detail records: told outcomes, writes in the background
        self.calls = calls  # established calls, for presence's "In a call"
        # [tls] client_auth: the user a verified client certificate on a TLS
        # flow is bound to (conclave.pki.identity), who then needs no digest.
        self.client_cert_user = client_cert_user
        self._tasks: set[asyncio.Task[None]] = set()
        self.services = list(services)
        self.by_method: dict[str, SipService] = {
            method: service for service in self.services for method in service.methods
        }
        self.allowed = frozenset((*ALLOWED_METHODS, *self.by_method))
        self.allow_header = ", ".join((*ALLOWED_METHODS, *sorted(self.by_method)))
        self.supported_header = ", ".join(SUPPORTED)
        self.allow_events = ", ".join(
            sorted({p for service in self.services for p in service.event_packages})
        )

    # -- requests ------------------------------------------------------------------------
    def on_request(self, txn: ServerTransaction, request: Request) -> None:
        flow = txn.source
        assert isinstance(flow, Flow)
        try:
            self._route(txn, request, flow)
        except RemoteProtocolError as exc:
            self.stack.respond(txn, exc.status, exc.reason, headers=exc.headers)

    def _route(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        to = peek_name_addr(request.headers.get("To") or "")
        in_dialog = to.tag is not None
        if self.stack.draining and not in_dialog:
            self.stack.respond(
                txn, 503, "Server shutting down", headers=[("Retry-After", RETRY_AFTER_DRAINING)]
            )
            return
        if requires_tls(request.uri) and not flow.secure:
            # RFC 3261 §26.2.2: a SIPS request must travel over TLS on every hop.
            self.stack.respond(txn, 403, "SIPS requires TLS")
            return
        token = self._pop_own_routes(request)
        if request.headers.get("Route") is not None:
            self.stack.respond(txn, 403, "Relaying to other servers is not enabled")
            return
        if in_dialog:
            self._in_dialog(txn, request, flow, token)
        else:
            self._out_of_dialog(txn, request, flow)

    def _pop_own_routes(self, request: Request) -> str | None:
        """Remove our own Route entries (§16.4); return the first one's dialog id."""
        found: str | None = None
        first = True
        while (value := request.headers.get("Route")) is not None:
            uri = peek_name_addr(value).uri
            if not self.local.is_me(uri):
                break
            request.headers.pop_first("Route")
            if first and isinstance(uri, SipURI):
                found = uri.user
                first = False
        return found

    def _in_dialog(
        self, txn: ServerTransaction, request: Request, flow: Flow, token: str | None
    ) -> None:
        if request.method not in self.allowed:
            self._method_not_allowed(txn, request)
            return
        service = self.by_method.get(request.method)
        if token is None and service is not None and self.local.is_me(request.uri):
            # A dialog in which this server is the UA (e.g. a subscription refresh).
            self._to_service(txn, request, flow, service)
            return
        if token is None:
            # No Record-Route of ours: this dialog was not set up through us,
            # so we will not carry it (no open relay).
            self.stack.respond(txn, 403, "Not a dialog routed by this server")
            return
        hop = self.dialogs.check(token, request, flow, self.stack.now())
        if isinstance(hop, Refusal):
            log.info("in-dialog request refused", status=hop.status, reason=hop.reason)
            self.stack.respond(txn, hop.status, hop.reason)
            return
        if not hop.on_party_flow and not self._authenticated_as_party(txn, request, flow, hop):
            return
        target = self._usable(hop.toward)
        if target is None:
            # RFC 5626 §5.3: the flow the other party used is gone; it must
            # come back and re-establish the dialog, we will not guess a new one.
            self.stack.respond(txn, 430, "Flow Failed")
            return
        self.dialogs.touch(hop.dialog, self.stack.now())
        if request.method == "BYE":
            self.dialogs.end(hop, request)
            if self.calls is not None:
                self.calls.ended(request.call_id)
            if self.cdr is not None:
                self.cdr.call_ended(request)
        done = self.cdr.outcome(request, in_dialog=True) if self.cdr is not None else None
        proceed = partial(self._relay_in_dialog, txn, request, flow, hop, target, done)
        if not self._archive_first(txn, request, proceed, done, session=True):
            proceed()

    def _authenticated_as_party(
        self, txn: ServerTransaction, request: Request, flow: Flow, hop: Hop
    ) -> bool:
        """An in-dialog request from a flow the dialog does not know: it must
        authenticate as the party its From names. That party is then reached
        on this flow (it reconnected). False once answered."""
        user = self._authenticate(txn, request, flow, proxy=True)
        if user is None:
            return False
        if self._aor(user) != hop.sender.aor:
            log.warning("not a party of the dialog", user=user, party=hop.sender.aor)
            self.stack.respond(txn, 403, "Not a party of this dialog")
            return False
        self.dialogs.moved(hop, flow)
        return True

    def _relay_in_dialog(
        self,
        txn: ServerTransaction,
        request: Request,
        flow: Flow,
        hop: Hop,
        target: Flow,
        done: Callable[[int], None] | None,
    ) -> None:
        self.proxy.forward(
            txn,
            request,
            [Target(request.uri, target)],
            inbound=flow,
            sender=hop.sender.aor,
            dialog=hop.dialog,
            on_final=done,
        )

    def _usable(self, flow: Flow | None) -> Flow | None:
        """``flow`` if it still works. A UDP flow is only an address: if the
        socket it names is gone (a restart on a new port), any of our UDP
        sockets reaches the same device."""
        if flow is None:
            return None
        if self.is_open(flow):
            return flow
        if flow.transport == "udp":
            return self.udp_flow(flow.remote)
        return None

    def _out_of_dialog(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        method = request.method
        if method not in KNOWN_METHODS:
            self.stack.respond(txn, 501, f"{method} is not implemented")
            return
        if method not in self.allowed:
            self._method_not_allowed(txn, request)
            return
        uri = request.uri
        if isinstance(uri, TelURI):
            self.stack.respond(txn, 404, "Telephone numbers need a mediation server")
            return
        assert isinstance(uri, SipURI)
        to_server = uri.user is None and (
            self.local.is_my_domain(uri) or self.local.is_my_host(uri)
        )
        if method == "REGISTER":
            self._register(txn, request, flow)
            return
        if to_server:
            self._to_server(txn, request)
            return
        mf = request.headers.get("Max-Forwards")
        if mf is not None and parse_max_forwards(mf) == 0:
            # §16.3 step 3: a request we would forward has no hops left.
            self.stack.respond(txn, 483, "Too Many Hops")
            return
        if self.proxy.is_loop(request):
            self.stack.respond(txn, 482, "Loop Detected")
            return
        if not self.local.is_my_domain(uri):
            self.stack.respond(txn, 403, "Relaying to other domains is not enabled")
            return
        user = self._local_sender(txn, request, flow)
        if user is None:
            return
        if uri.user is not None:
            # One identity per user whatever the case it is written in: the
            # stored spelling is the AOR features, quotas and privacy see.
            canonical = self.users.canonical(uri.user)
            if canonical is None:
                self._answer(txn, 404, "No such user", self._outcome(request))
                return
            if canonical != uri.user:
                uri = request.uri = dataclasses.replace(uri, user=canonical)
        service = self.by_method.get(method)
        if service is not None:
            service.handle(txn, request, user=user, flow=flow)
            return
        self._deliver(txn, request, flow, uri, user)

    def _to_service(
        self, txn: ServerTransaction, request: Request, flow: Flow, service: SipService
    ) -> None:
        user = self._local_sender(txn, request, flow)
        if user is not None:
            service.handle(txn, request, user=user, flow=flow)

    def _local_sender(self, txn: ServerTransaction, request: Request, flow: Flow) -> str | None:
        """The authenticated local user who sent ``request``, or None once answered.

        Senders outside our domain get 403 (federation is off); local ones
        are challenged (407) and must authenticate as the From user (403).
        """
        sender = peek_name_addr(request.headers.get("From") or "").uri
        if not self.local.is_my_domain(sender):
            self.stack.respond(txn, 403, "Federation is not enabled")
            return None
        user = self._authenticate(txn, request, flow, proxy=True)
        if user is None:
            return None
        if not isinstance(sender, SipURI) or sender.user != user:
            log.warning("identity mismatch", user=user, from_user=getattr(sender, "user", None))
            self.stack.respond(txn, 403, "From does not match the authenticated user")
            return None
        return user

    def _outcome(self, request: Request) -> Callable[[int], None] | None:
        return self.cdr.outcome(request) if self.cdr is not None else None

    def _deliver(
        self, txn: ServerTransaction, request: Request, flow: Flow, uri: SipURI, user: str
    ) -> None:
        done = self._outcome(request)
        if uri.user is None:
            self._answer(txn, 404, "No such user", done)
            return
        proceed = partial(self._deliver_now, txn, request, flow, uri, user, done)
        if not self._archive_first(txn, request, proceed, done, recipient=aor_of(uri)):
            proceed()

    def _deliver_now(
        self,
        txn: ServerTransaction,
        request: Request,
        flow: Flow,
        uri: SipURI,
        user: str,
        done: Callable[[int], None] | None,
    ) -> None:
        aor = aor_of(uri)
        now = self.clock()
        targets = []
        secure_only = requires_tls(request.uri)
        for contact in self.location.lookup(aor, now):
            device = self._usable(contact.flow)
            if device is not None and (device.secure or not secure_only):
                targets.append(Target(contact.uri, device))
        if not targets:
            if request.method == "MESSAGE":
                self._spawn(self._hold_message(txn, request, aor, now, done))
            else:
                self._answer(txn, 480, "User is offline", done)
            return
        on_final = done
        if self.calls is not None and request.method == "INVITE":
            on_final = _both(done, self.calls.invite_outcome(request))
        self.proxy.forward(
            txn, request, targets, inbound=flow, sender=self._aor(user), on_final=on_final
        )

    def _archive_first(
        self,
        txn: ServerTransaction,
        request: Request,
        proceed: Callable[[], None],
        done: Callable[[int], None] | None,
        *,
        recipient: str | None = None,
        session: bool = False,
    ) -> bool:
        """A MESSAGE under an archiving policy: ``proceed`` (deliver) runs only once it
        is durably archived, or the sender is refused. False: not archived, go on."""
        if self.archive is None or request.method != "MESSAGE":
            return False
        job = self.archive.before_delivery(
            request,
            proceed,
            lambda status, reason, headers: self._answer(txn, status, reason, done, headers),
            recipient=recipient,
            session=session,
        )
        if job is None:
            return False
        self._spawn(job)
        return True

    def _answer(
        self,
        txn: ServerTransaction,
        status: int,
        reason: str,
        done: Callable[[int], None] | None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer locally and tell the CDR recorder (``done``) the outcome."""
        self.stack.respond(txn, status, reason, headers=headers or ())
        if done is not None:
            done(status)

    async def _hold_message(
        self,
        txn: ServerTransaction,
        request: Request,
        aor: str,
        now: float,
        done: Callable[[int], None] | None = None,
    ) -> None:
        try:
            stored = await self.im.hold(request, aor, now)
        except Exception as exc:
            log.error("offline store failed", aor=aor, reason=str(exc))
            self._answer(txn, 500, "Message could not be stored", done)
            return
        if stored:
            log.info("message held for offline user", aor=aor)
            self._answer(txn, 202, "Accepted (recipient offline; stored)", done)
        else:
            self._answer(txn, 480, "Recipient offline and their message store is full", done)

    def _register(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        uri = request.uri
        if not (self.local.is_my_domain(uri) or self.local.is_me(uri)):
            self.stack.respond(txn, 404, "Not a domain served here")
            return
        user = self._authenticate(txn, request, flow, proxy=False)
        if user is None:
            return
        response = self.registrar.handle(
            request, user=user, flow=flow, now=self.clock(), to_tag=new_tag()
        )
        log.info("register", user=user, status=response.status)
        self.stack.send_response(txn, response)
        if self.cdr is not None:
            self.cdr.registered(f"sip:{user}@{self.local.domain}", request, response, flow)

    def _to_server(self, txn: ServerTransaction, request: Request) -> None:
        if request.method != "OPTIONS":
            self._method_not_allowed(txn, request, allow="OPTIONS, REGISTER")
            return
        check_extensions(request, "Require", frozenset(SUPPORTED))
        headers = [
            ("Allow", self.allow_header),
            ("Supported", self.supported_header),
            ("Accept", "application/sdp, text/plain"),
        ]
        if self.allow_events:
            headers.append(("Allow-Events", self.allow_events))
        self.stack.respond(txn, 200, "OK", headers=headers)

    def _aor(self, user: str) -> str:
        """The address of record of local user ``user`` (its stored spelling)."""
        return str(SipURI(user=user, host=self.local.domain))

    def _method_not_allowed(
        self, txn: ServerTransaction, request: Request, allow: str | None = None
    ) -> None:
        self.stack.respond(
            txn,
            405,
            f"{request.method} is not enabled",
            headers=[("Allow", allow or self.allow_header)],
        )

    def _authenticate(
        self, txn: ServerTransaction, request: Request, flow: Flow, *, proxy: bool
    ) -> str | None:
        if self.client_cert_user is not None and flow.secure:
            named = self.client_cert_user(flow)
            user = self.users.canonical(named) if named is not None else None
            sender = peek_name_addr(request.headers.get("From") or "").uri
            claimed = sender.user if isinstance(sender, SipURI) else None
            if user is not None and user == claimed:
                structlog.contextvars.bind_contextvars(user=user, auth="certificate")
                return user
        # Over UDP a source address can be forged: nonces are bound to it.
        bound_to = flow.remote[0] if flow.transport == "udp" else ""
        outcome = self.auth.authenticate(request, proxy=proxy, now=self.clock(), bound_to=bound_to)
        if isinstance(outcome, Authenticated):
            structlog.contextvars.bind_contextvars(user=outcome.user)
            return outcome.user
        if isinstance(outcome, BadCredentials):
            self.stack.respond(txn, 400, f"Malformed credentials: {outcome.reason}")
            return None
        if outcome.failed:
            metrics.AUTH_FAILURES.inc()
            log.info("authentication failed", source=flow.remote[0])
            if self.guard.record_auth_failure(flow.remote[0], self.clock()):
                metrics.AUTH_LOCKOUTS.inc()
                log.warning(
                    "source banned",
                    source=flow.remote[0],
                    reason="authentication failures",
                    seconds=self.guard.ban_seconds,
                )
        # Over UDP the source may be forged: the challenge goes out once, with
        # no retransmissions and no transaction kept (RFC 3261 §26.3.2.4).
        once = flow.transport == "udp"
        self.stack.respond(txn, 407 if proxy else 401, headers=outcome.headers, once=once)
        return None

    # -- CANCEL and ACK ------------------------------------------------------------------
    def on_cancel(
        self, txn: ServerTransaction, request: Request, invite: ServerTransaction | None
    ) -> None:
        if invite is None:
            self.stack.respond(txn, 481, "No matching transaction")
            return
        self.stack.respond(txn, 200, "OK")
        if not self.proxy.cancel(invite):
            # Not proxied (answered locally, or still waiting to be stored).
            self.stack.respond(invite, 487, "Request Terminated")

    def on_ack(self, request: Request, flow: Flow) -> None:
        """The ACK of a 2xx: forward it statelessly along the dialog (§16.11).

        An ACK cannot be challenged, so it must come on its sender's recorded
        flow; anything else is dropped."""
        token = self._pop_own_routes(request)
        if token is None or request.headers.get("Route") is not None:
            return
        hop = self.dialogs.check(token, request, flow, self.stack.now())
        if isinstance(hop, Refusal) or not hop.on_party_flow:
            log.info("ACK dropped", reason=getattr(hop, "reason", "not on the party's flow"))
            return
        target = self._usable(hop.toward)
        if target is None:
            return
        mf = request.headers.get("Max-Forwards")
        remaining = 70 if mf is None else parse_max_forwards(mf)
        if remaining == 0:
            return
        request.headers.set("Max-Forwards", str(remaining - 1))
        request.headers.prepend("Via", self.local.via(target.transport, new_branch()))
        self.stack.send_stateless(request, target)

    # -- responses -----------------------------------------------------------------------
    def on_stray_response(self, response: Response, flow: Flow) -> None:
        """A response that matched no transaction. Never sent where its Via
        points: only the proxy's dialog check may forward it; else dropped."""
        if self.proxy.on_stray_response(response, flow):
            return
        self.stray_dropped += 1
        metrics.STRAY_RESPONSES_DROPPED.inc()
        log.info("stray response dropped", status=response.status, source=str(flow))

    def on_terminated(self, txn: object) -> None:
        self.proxy.on_terminated(txn)

    # -- housekeeping --------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pending(self) -> int:
        """Requests whose answer waits on background work (an offline store write)."""
        return len(self._tasks)

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _both(
    first: Callable[[int], None] | None, second: Callable[[int], None]
) -> Callable[[int], None]:
    """One final-status callback that tells two listeners."""
    if first is None:
        return second

    def call(status: int) -> None:
        first(status)
        second(status)

    return call
