"""Stateful proxy core (RFC 3261 §16): forking, response selection, CANCEL.

One :class:`ProxyContext` exists per request being proxied. It holds the
server transaction and one :class:`Branch` (a client transaction) per
target. Targets are tried in parallel (§16.6). Responses are handled as
§16.7 says:

* 100 is absorbed hop by hop; other provisional responses are forwarded at
  once;
* every 2xx is forwarded at once, and for INVITE the other branches are
  cancelled (§16.7 step 10);
* 3xx-6xx are kept until every branch has a final answer, then the best is
  forwarded (§16.7 step 6): a 6xx wins, otherwise the lowest class, and a
  chosen 503 is sent on as 500. A 6xx also cancels the other branches.

A branch that has seen no provisional response cannot be CANCELled yet
(§9.1); it is marked and the CANCEL goes out when its first 1xx arrives.
Timer C (§16.8) cancels an INVITE branch that rings for too long (each
provisional response but 100 starts it again, §16.7 step 2). A branch
with no final response 64*T1 after its CANCEL (a device that crashed while
ringing, or whose connection closed) is given up (§9.1) and answers 408
itself, so the caller always gets a final response. A branch still pending
when the caller's transaction ends (a 2xx went up, or the caller is gone) is
cancelled, so nothing rings on for no one.

Each branch is the owner of its client transaction
(:class:`~conclave.core.stack.ClientOwner`), recorded before the first
send, so a branch whose first transmission fails still gets its 503.

A request that can create a dialog opens one :class:`RoutedDialog` per
branch (:mod:`conclave.core.dialogs`); its id is what our Record-Route
entries and the branch's Via carry. Identity headers from clients
(P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID) are removed from
every request and response we forward; requests carry a P-Asserted-Identity
(RFC 3325) of the sender we authenticated, unless it asked for privacy.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.flow import Flow
from conclave.sip.ids import MAGIC_COOKIE, new_branch
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response, make_response
from conclave.sip.transaction import ClientTransaction, ServerTransaction, make_cancel
from conclave.sip.uri import URI

from .dialogs import DIALOG_ID_LENGTH, DialogTable, RoutedDialog
from .stack import Cancellable, SipStack

log = structlog.get_logger("conclave.proxy")

TIMER_C = 180.0
"""RFC 3261 §16.8: an INVITE branch that has rung for this long without a
final answer is cancelled. Must be more than 3 minutes; we use exactly 3."""

DEFAULT_MAX_FORWARDS = 70
"""§16.6 step 3: added when the request arrived without Max-Forwards."""

DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
"""Requests that can create a dialog, and so get Record-Route (§16.6 step 4)."""

INTERNAL_HEADERS = ("Conclave-Authenticated", "Conclave-Partner", "Conclave-Source-Ban")
"""What an Edge or a Director tells a Front End (conclave.core.signin, .router): believed
only on their connections, never passed on by a proxy (a Director adds its own through
``extra_headers``)."""

IDENTITY_HEADERS = ("P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID")
"""Identity claims only a trusted server may make (RFC 3325 §5, and the older
Remote-Party-ID draft). Every flow is a client's today, so none is trusted:
they are removed, and the identity we authenticated is asserted instead."""

RETRY_AFTER_TOO_MANY_DIALOGS = "60"


@dataclass(frozen=True)
class Target:
    """Where one branch goes: the new Request-URI and the flow to send on, and
    the route to take there: the Path the binding was registered through
    (RFC 3327 §5.3), sent as Route headers in that order."""

    uri: URI
    flow: Flow
    route: tuple[str, ...] = ()


@dataclass(eq=False)
class Branch:
    """One target of a proxied request; the owner of its client transaction."""

    proxy: Proxy
    _context: weakref.ref[ProxyContext]
    """Weak: the context holds its branches, and a cycle between them would
    outlive the request until a full collection, which the server runs only
    every few minutes (conclave.ops.gcpause). The proxy holds the context
    while the caller's transaction lives; a branch that answers later than
    that has no one to answer."""
    target: Target
    request: Request
    dialog: RoutedDialog | None = None
    """The dialog this branch opened (None for in-dialog requests and others)."""
    txn: ClientTransaction | None = None
    provisional: bool = False
    final: Response | None = None
    cancel_wanted: bool = False
    cancelled: bool = False
    timer: Cancellable | None = None
    """Timer C while it rings; after its CANCEL, the §9.1 wait for a final response."""

    @property
    def done(self) -> bool:
        return self.final is not None

    @property
    def context(self) -> ProxyContext | None:
        context: ProxyContext | None = self._context()
        return context

    def on_response(self, txn: ClientTransaction, response: Response) -> None:
        self.proxy.branch_response(self, response)

    def on_failure(self, txn: ClientTransaction, status: int) -> None:
        reason = "Request Timeout" if status == 408 else "Service Unavailable"
        self.proxy.branch_failed(self, status, reason)


FlowsFailed = Callable[[list[Target], bool], bool]
"""Told, when every branch has its final answer, which targets answered 430 Flow Failed
(RFC 5626 §5.3: the edge proxy holding that flow lost it) and whether all did; True
when it has answered the request itself (the offline store took it)."""


@dataclass(eq=False)
class ProxyContext:
    server_txn: ServerTransaction
    request: Request
    branches: list[Branch] = field(default_factory=list)
    flows_failed: FlowsFailed | None = None
    final_sent: bool = False
    best: Response | None = None


class Proxy:
    """Forwards requests to targets and responses back, statefully."""

    def __init__(self, stack: SipStack, local: LocalEndpoint, dialogs: DialogTable) -> None:
        self.stack = stack
        self.local = local
        self.dialogs = dialogs
        self._contexts: dict[ServerTransaction, ProxyContext] = {}

    def pending(self) -> int:
        """Requests being proxied that have no final response yet."""
        return sum(1 for c in self._contexts.values() if not c.final_sent)

    # -- requests ------------------------------------------------------------------------
    def forward(
        self,
        server_txn: ServerTransaction,
        request: Request,
        targets: list[Target],
        *,
        inbound: Flow,
        sender: str,
        dialog: RoutedDialog | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
        flows_failed: FlowsFailed | None = None,
    ) -> None:
        """Fork ``request`` to every target in parallel (§16.5, §16.6).

        ``sender`` is the address of record the request was authenticated as
        (asserted downstream; the owner of any dialog it opens). ``dialog`` is
        the dialog an in-dialog request travels in: its Record-Route keeps that
        dialog's id. Without one, a dialog-creating request opens a dialog per
        branch.
        """
        opens = dialog is None and request.method in DIALOG_METHODS
        if opens and not self.dialogs.can_open(sender):
            log.warning("too many dialogs", sender=sender)
            self.stack.respond(
                server_txn,
                503,
                "Too many open dialogs",
                headers=[("Retry-After", RETRY_AFTER_TOO_MANY_DIALOGS)],
            )
            return
        context = ProxyContext(server_txn, request, flows_failed=flows_failed)
        self._contexts[server_txn] = context
        now = self.stack.now()
        opened_here: list[RoutedDialog] = []
        try:
            for target in targets:
                opened = None
                if opens:
                    opened = self.dialogs.open(
                        request, owner=sender, caller_flow=inbound, callee_flow=target.flow,
                        now=now,
                    )  # fmt: skip
                    if opened is not None:
                        opened_here.append(opened)
                branch_req = self._branch_request(
                    request, target, inbound, sender, opened or dialog
                )
                for name, value in extra_headers:
                    branch_req.headers.add(name, value)
                branch = Branch(self, weakref.ref(context), target, branch_req, opened)
                context.branches.append(branch)
        except Exception:
            # Nothing was sent: forget the request (the stack answers it 500).
            del self._contexts[server_txn]
            for routed in opened_here:
                self.dialogs.close(routed)
            raise
        for branch in context.branches:
            try:
                branch.txn = self.stack.send_request(branch.request, branch.target.flow, branch)
            except LocalProtocolError as exc:
                log.warning("branch not started", reason=str(exc))
                self.branch_failed(branch, 503, "Service Unavailable")
        self._maybe_finish(context)

    def _branch_request(
        self,
        request: Request,
        target: Target,
        inbound: Flow,
        sender: str,
        dialog: RoutedDialog | None,
    ) -> Request:
        headers = request.headers.copy()
        max_forwards = request.max_forwards
        remaining = DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards
        headers.set("Max-Forwards", str(max(remaining - 1, 0)))
        # §22.3: credentials for our realm were consumed here; do not pass them on.
        headers.remove("Proxy-Authorization")
        for name in (*IDENTITY_HEADERS, *INTERNAL_HEADERS):
            headers.remove(name)
        if not _privacy_id(request):
            headers.add("P-Asserted-Identity", f"<{sender}>")
        if dialog is not None and request.method in DIALOG_METHODS:
            # RFC 5658 double Record-Route: the entry nearer the callee (top)
            # is reached from the target's side, the lower one from the
            # caller's; both name the dialog.
            headers.prepend("Record-Route", self.local.record_route(inbound, dialog.id))
            headers.prepend("Record-Route", self.local.record_route(target.flow, dialog.id))
        # A branch in a dialog carries the dialog's id, so a late 2xx on it
        # (after its transaction ended) can be traced back to the dialog.
        unique = new_branch() if dialog is None else dialog_branch(dialog)
        branch = f"{unique}.{loop_hash(request)}"
        for hop in reversed(target.route):  # the first Path entry ends up first
            headers.prepend("Route", hop)
        headers.prepend("Via", self.local.via(target.flow, branch))
        return Request(request.method, target.uri, headers, request.body, request.version)

    def is_loop(self, request: Request) -> bool:
        """§16.3 step 4: the request already passed here *unchanged* (482).

        A request that comes back with our Via on it but a different
        Request-URI or other routing input is a spiral, which is legal;
        the branch we wrote carries a hash of those inputs to tell the two
        apart (§16.6 step 8).
        """
        current = loop_hash(request)
        for via in request.vias:
            if not self.local.is_own_via(via.host, via.port):
                continue
            branch = via.branch or ""
            if branch.rpartition(".")[2] == current:
                return True
        return False

    # -- responses -----------------------------------------------------------------------
    def branch_response(self, branch: Branch, response: Response) -> None:
        """A response on one of our branches (the branch owns its transaction)."""
        if branch.dialog is not None:
            self.dialogs.on_response(branch.dialog, response, self.stack.now())
        context = branch.context
        if context is None:
            return  # the caller's transaction is over: no one to answer
        status = response.status
        if status < 200:
            if not branch.provisional:
                branch.provisional = True
                if branch.cancel_wanted:
                    self._send_cancel(branch)
                elif branch.txn is not None and branch.txn.is_invite:
                    self._start_timer(branch, TIMER_C, self._timer_c_fired)
            elif status > 100 and branch.timer is not None and not branch.cancelled:
                # §16.7 step 2: each provisional response but 100 resets Timer C.
                self._stop_timer(branch)
                self._start_timer(branch, TIMER_C, self._timer_c_fired)
            if status > 100 and not context.final_sent:
                self._relay(context, response)
            return
        self._stop_timer(branch)
        if branch.final is None:
            branch.final = response
        if 200 <= status < 300:
            # §16.7 step 5: every 2xx is forwarded, even after another 2xx.
            self._relay(context, response, final=True)
            if branch.txn is not None and branch.txn.is_invite:
                self._cancel_others(context, branch)
        elif status >= 600:
            self._cancel_others(context, branch)
        self._maybe_finish(context)

    def branch_failed(self, branch: Branch, status: int, reason: str) -> None:
        """Timer B/F, a transport failure, or a send refused: the branch answers
        ``status`` itself (§16.8), once."""
        self._stop_timer(branch)
        if branch.final is None:
            branch.final = make_response(branch.request, status, reason)
            if branch.dialog is not None:
                self.dialogs.on_response(branch.dialog, branch.final, self.stack.now())
        if (context := branch.context) is not None:
            self._maybe_finish(context)

    def on_stray_response(self, response: Response, flow: Flow) -> bool:
        """A response that matched no transaction. Only a 2xx to an INVITE whose
        top Via is ours, naming a dialog we opened on the flow it came from, is
        forwarded (§16.7 step 5, RFC 6026), and only to that dialog's caller.
        False: dropped; nothing is ever sent where a response merely points."""
        if not (200 <= response.status < 300) or response.cseq.method != "INVITE":
            return False
        try:
            top = response.top_via
        except RemoteProtocolError:
            return False
        branch = top.branch or ""
        if not branch.startswith(MAGIC_COOKIE) or not self.local.is_own_via(top.host, top.port):
            return False
        token = branch[len(MAGIC_COOKIE) : len(MAGIC_COOKIE) + DIALOG_ID_LENGTH]
        destination = self.dialogs.for_stray_2xx(token, response, flow, self.stack.now())
        if destination is None:
            return False
        out = _upstream_copy(response)
        if not out.headers.get("Via"):
            return False
        self.stack.send_stateless(out, destination)
        return True

    def on_terminated(self, txn: object) -> None:
        if isinstance(txn, ServerTransaction):
            context = self._contexts.pop(txn, None)
            if context is not None:
                # The caller's transaction is over (its final response went, or
                # it failed): a branch still pending has no one to answer, so it
                # is cancelled, and its own timers (Timer B, the §9.1 wait after
                # its CANCEL) keep running until it ends.
                for branch in context.branches:
                    self._request_cancel(branch)

    # -- CANCEL --------------------------------------------------------------------------
    def cancel(self, server_txn: ServerTransaction) -> bool:
        """A CANCEL matched ``server_txn`` (§16.10). False if we are not proxying it."""
        context = self._contexts.get(server_txn)
        if context is None:
            return False
        for branch in context.branches:
            self._request_cancel(branch)
        return True

    def _cancel_others(self, context: ProxyContext, winner: Branch) -> None:
        for branch in context.branches:
            if branch is not winner:
                self._request_cancel(branch)

    def _request_cancel(self, branch: Branch) -> None:
        if branch.done or branch.cancelled or branch.txn is None or not branch.txn.is_invite:
            return
        if branch.provisional:
            self._send_cancel(branch)
        else:
            branch.cancel_wanted = True

    def _send_cancel(self, branch: Branch) -> None:
        if branch.cancelled or branch.done:
            return
        branch.cancelled = True
        try:
            self.stack.send_request(make_cancel(branch.request), branch.target.flow)
        except LocalProtocolError as exc:
            log.warning("CANCEL not sent", reason=str(exc))
        # §9.1: if no final response comes within 64*T1 of the CANCEL (it was
        # lost, or could not be sent), the INVITE transaction is given up.
        self._stop_timer(branch)
        self._start_timer(branch, self.stack.layer.config.timeout, self._cancel_unanswered)

    def _cancel_unanswered(self, branch: Branch) -> None:
        branch.timer = None
        if branch.done:
            return
        log.info("no final response after CANCEL; branch given up", target=str(branch.target.uri))
        self.branch_failed(branch, 408, "Request Timeout")
        if branch.txn is not None:
            self.stack.abandon(branch.txn)

    # -- Timer C and the wait after a CANCEL -------------------------------------------
    def _start_timer(self, branch: Branch, delay: float, fired: Callable[[Branch], None]) -> None:
        assert self.stack.scheduler is not None
        branch.timer = self.stack.scheduler.call_later(delay, fired, branch)

    def _stop_timer(self, branch: Branch) -> None:
        if branch.timer is not None:
            branch.timer.cancel()
            branch.timer = None

    def _timer_c_fired(self, branch: Branch) -> None:
        branch.timer = None
        log.info("timer C fired; cancelling branch", target=str(branch.target.uri))
        self._request_cancel(branch)

    # -- choosing and relaying -----------------------------------------------------------
    def _maybe_finish(self, context: ProxyContext) -> None:
        if context.final_sent or not all(b.done for b in context.branches):
            return
        failed = [b.target for b in context.branches if b.final and b.final.status == 430]
        if failed and context.flows_failed is not None:
            everyone = len(failed) == len(context.branches)
            if context.flows_failed(failed, everyone) and everyone:
                context.final_sent = True
                return
        finals = [b.final for b in context.branches if b.final is not None]
        best = choose_best(finals) if finals else None
        if best is None:
            context.final_sent = True
            self.stack.respond(context.server_txn, 480, "Temporarily Unavailable")
            return
        if best.status == 503:
            # §16.7 step 6: a 503 from downstream means that element is busy,
            # not this one; pass it on as 500.
            best = Response(500, "Server Internal Error", best.headers.copy(), best.body)
        self._relay(context, best, final=True)

    def _relay(self, context: ProxyContext, response: Response, *, final: bool = False) -> None:
        out = _upstream_copy(response)
        if not out.headers.get("Via"):
            return
        if final and context.final_sent:
            # Another fork's 2xx to an INVITE (§16.7 step 5): through the
            # transaction while it is Accepted (RFC 6026), else statelessly.
            # A non-INVITE request has one final response: the rest are dropped.
            extra_2xx = 200 <= response.status < 300 and context.request.method == "INVITE"
            if extra_2xx and not self.stack.send_response(context.server_txn, out):
                flow = context.server_txn.source
                if isinstance(flow, Flow):
                    self.stack.send_stateless(out, flow)
            return
        if final:
            context.final_sent = True
        self.stack.send_response(context.server_txn, out)


def dialog_branch(dialog: RoutedDialog) -> str:
    """A unique branch (§8.1.1.7) that names ``dialog``: the cookie, the
    dialog's id, then 64 random bits."""
    return f"{MAGIC_COOKIE}{dialog.id}{os.urandom(8).hex()}"


def _privacy_id(request: Request) -> bool:
    """RFC 3323/3325: the sender asked that its identity not be passed on."""
    return any(
        token.strip().lower() in ("id", "user")
        for value in request.headers.get_all("Privacy")
        for token in value.split(";")
    )


def _upstream_copy(response: Response) -> Response:
    """``response`` as we pass it upstream: without our Via (§16.7 step 3)
    and without identity claims from the client that sent it."""
    headers = response.headers.copy()
    headers.pop_first("Via")
    for name in IDENTITY_HEADERS:
        headers.remove(name)
    return Response(response.status, response.reason, headers, response.body, response.version)


def loop_hash(request: Request) -> str:
    """A digest of the request's routing inputs (§16.6 step 8, §16.3 step 4)."""
    cseq = (request.headers.get("CSeq") or "").split(" ", 1)[0]
    parts = [
        str(request.uri),
        request.from_tag or "",
        request.to_tag or "",
        request.call_id or "",
        cseq,
        ",".join(request.headers.get_all("Proxy-Require")),
    ]
    return hashlib.blake2s("\n".join(parts).encode(), digest_size=8).hexdigest()


def choose_best(finals: list[Response]) -> Response:
    """§16.7 step 6: a 6xx if any, else the lowest response class; 401/407 merged."""
    six = [r for r in finals if r.status >= 600]
    if six:
        return six[0]
    ok = [r for r in finals if 200 <= r.status < 300]
    if ok:
        return ok[0]
    lowest = min(finals, key=lambda r: (r.status // 100, _preference(r.status)))
    if lowest.status in (401, 407):
        # §16.7 step 7: collect every challenge into the one response.
        merged = Response(lowest.status, lowest.reason, lowest.headers.copy(), lowest.body)
        for other in finals:
            if other is lowest or other.status not in (401, 407):
                continue
            for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                for value in other.headers.get_all(name):
                    merged.headers.add(name, value)
        return merged
    return lowest


def _preference(status: int) -> int:
    # Within 4xx, prefer answers the caller can act on (auth, busy) over 408/480.
    order = {401: 0, 407: 0, 486: 1, 415: 2, 420: 2, 484: 2, 488: 2, 480: 5, 408: 6}
    return order.get(status, 3)
