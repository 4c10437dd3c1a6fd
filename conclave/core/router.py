"""The Standard Edition's transaction user: who handles each request.

For every new request the router decides, in this order (RFC 3261 §16.3,
§16.4 and the Lync security model):

1. **Draining**: during a graceful stop, new out-of-dialog work gets 503.
2. **Loose routing**: our own Route entries are removed; the first one's
   flow token says where an in-dialog request goes next.
3. **In-dialog requests** (To tag) travel only along a Record-Route we
   inserted and authenticated (the token's HMAC); anything else is 403.
4. **Out-of-dialog requests**: unknown methods 501, disabled ones 405;
   requests to the server itself (REGISTER, OPTIONS); no relaying to other
   domains and no requests from them (federation is off: 403); digest
   authentication (401 for REGISTER, 407 otherwise); the authenticated user
   must be the From user (403); a method owned by an enabled service
   (:mod:`conclave.core.service`, e.g. presence) goes to that service;
   otherwise the target: 404 for an unknown user, offline store (202) for
   a MESSAGE to an offline user, 480 for other requests to an offline
   user, else the proxy forks to every device.

Nothing here awaits the database except storing an offline message, which
runs as its own task and answers when the write is durable. Likewise a
MESSAGE under an archiving policy is delivered by a task once its archive
record is durable (:mod:`conclave.services.archive`); outcomes go to the CDR
recorder (:mod:`conclave.services.cdr`), which writes in the background.
"""

from __future__ import annotations

import asyncio
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
from conclave.sip.fields import parse_max_forwards, peek_via
from conclave.sip.message import Request, Response
from conclave.sip.transaction import ClientTransaction, ServerTransaction
from conclave.sip.uri import SipURI, TelURI
from conclave.sip.validate import check_extensions
from conclave.transport.flow import Flow
from conclave.transport.guard import SourceGuard

from .auth import Authenticated, Authenticator, BadCredentials, CredentialCache
from .calls import CallTracker
from .local import LocalEndpoint
from .proxy import Proxy, Target
from .service import SipService
from .stack import SipStack, new_branch, new_tag

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
        find_connection: Callable[[str, tuple[str, int]], Flow | None],
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
        self.find_connection = find_connection
        self.udp_flow = udp_flow
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
        next_flow = self._pop_own_routes(request)
        if request.headers.get("Route") is not None:
            self.stack.respond(txn, 403, "Relaying to other servers is not enabled")
            return
        if in_dialog:
            self._in_dialog(txn, request, flow, next_flow)
        else:
            self._out_of_dialog(txn, request, flow)

    def _pop_own_routes(self, request: Request) -> Flow | None:
        """Remove our own Route entries (§16.4); return the first one's flow."""
        found: Flow | None = None
        first = True
        while (value := request.headers.get("Route")) is not None:
            uri = peek_name_addr(value).uri
            if not self.local.is_me(uri):
                break
            request.headers.pop_first("Route")
            if first and isinstance(uri, SipURI):
                found = self.local.flow_from_token(uri.user)
                first = False
        return found

    def _in_dialog(
        self, txn: ServerTransaction, request: Request, flow: Flow, next_flow: Flow | None
    ) -> None:
        if request.method not in self.allowed:
            self._method_not_allowed(txn, request)
            return
        service = self.by_method.get(request.method)
        if next_flow is None and service is not None and self.local.is_me(request.uri):
            # A dialog in which this server is the UA (e.g. a subscription refresh).
            self._to_service(txn, request, flow, service)
            return
        if next_flow is None:
            # No Record-Route of ours with a valid token: this dialog was not
            # set up through us, so we will not carry it (no open relay).
            self.stack.respond(txn, 403, "Not a dialog routed by this server")
            return
        if request.method == "BYE" and self.calls is not None:
            self.calls.ended(request.call_id)
        if request.method == "BYE" and self.cdr is not None:
            self.cdr.call_ended(request)
        done = self.cdr.outcome(request, in_dialog=True) if self.cdr is not None else None
        proceed = partial(self._relay_in_dialog, txn, request, flow, next_flow, done)
        if not self._archive_first(txn, request, proceed, done, session=True):
            proceed()

    def _relay_in_dialog(
        self,
        txn: ServerTransaction,
        request: Request,
        flow: Flow,
        next_flow: Flow,
        done: Callable[[int], None] | None,
    ) -> None:
        target = self._dialog_target(request, next_flow)
        if target is None:
            self._answer(txn, 480, "Peer is no longer connected", done)
            return
        self.proxy.forward(txn, request, [Target(request.uri, target)], inbound=flow, on_final=done)

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

    def _dialog_target(self, request: Request, next_flow: Flow) -> Flow | None:
        usable = self._usable(next_flow)
        if usable is not None:
            return usable
        # The peer reconnected: find its registration by its Contact URI.
        now = self.clock()
        for name in ("To", "From"):
            try:
                aor = aor_of(peek_name_addr(request.headers.get(name) or "").uri)
            except ValueError:
                continue
            for contact in self.location.lookup(aor, now):
                flow = self._usable(contact.flow)
                if flow is not None and contact.uri.equivalent(request.uri):
                    return flow
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
        service = self.by_method.get(method)
        if service is not None:
            service.handle(txn, request, user=user, flow=flow)
            return
        self._deliver(txn, request, flow, uri)

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

    def _deliver(self, txn: ServerTransaction, request: Request, flow: Flow, uri: SipURI) -> None:
        done = self.cdr.outcome(request) if self.cdr is not None else None
        if uri.user is None or not self.users.exists(uri.user):
            self._answer(txn, 404, "No such user", done)
            return
        proceed = partial(self._deliver_now, txn, request, flow, uri, done)
        if not self._archive_first(txn, request, proceed, done, recipient=aor_of(uri)):
            proceed()

    def _deliver_now(
        self,
        txn: ServerTransaction,
        request: Request,
        flow: Flow,
        uri: SipURI,
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
        self.proxy.forward(txn, request, targets, inbound=flow, on_final=on_final)

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
            user = self.client_cert_user(flow)
            sender = peek_name_addr(request.headers.get("From") or "").uri
            claimed = sender.user if isinstance(sender, SipURI) else None
            if user is not None and user == claimed and self.users.exists(user):
                structlog.contextvars.bind_contextvars(user=user, auth="certificate")
                return user
        outcome = self.auth.authenticate(request, proxy=proxy, now=self.clock())
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
        self.stack.respond(txn, 407 if proxy else 401, headers=outcome.headers)
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
        """The ACK of a 2xx: forward it statelessly along the dialog (§16.11)."""
        next_flow = self._pop_own_routes(request)
        if next_flow is None or request.headers.get("Route") is not None:
            return
        target = self._dialog_target(request, next_flow)
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
    def on_response(self, txn: ClientTransaction, response: Response) -> None:
        if self.proxy.on_response(txn, response) or self.im.on_response(txn, response):
            return
        for service in self.services:
            if service.on_response(txn, response):
                return

    def on_stray_response(self, response: Response, flow: Flow) -> None:
        """A response with no transaction (a retransmitted 2xx): pass it upstream."""
        vias = response.headers.get_all("Via")
        if len(vias) < 2:
            return
        try:
            ours, upstream = peek_via(vias[0]), peek_via(vias[1])
        except RemoteProtocolError:
            return
        if ours.host.lower() != self.local.host.lower():
            return
        response.headers.pop_first("Via")
        host = (upstream.received or upstream.host).strip("[]")
        port = upstream.rport or upstream.port or 5060
        transport = upstream.transport.lower()
        dest = (
            self.find_connection(transport, (host, port))
            if transport in ("tcp", "tls")
            else self.udp_flow((host, port))
        )
        if dest is not None:
            self.stack.send_stateless(response, dest)

    def on_timeout(self, txn: object, timer: object) -> None:
        if isinstance(txn, ClientTransaction) and not self.proxy.on_timeout(txn):
            self._failed(txn, 408)

    def on_transport_failed(self, txn: object) -> None:
        if isinstance(txn, ClientTransaction) and not self.proxy.on_transport_failed(txn):
            self._failed(txn, 503)

    def _failed(self, txn: ClientTransaction, status: int) -> None:
        if self.im.on_failure(txn, status):
            return
        for service in self.services:
            if service.on_failure(txn, status):
                return

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
