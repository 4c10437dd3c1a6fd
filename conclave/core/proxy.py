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
Timer C (§16.8) cancels an INVITE branch that rings for too long.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from conclave.sip.address import peek_name_addr
from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.fields import parse_max_forwards, peek_via
from conclave.sip.message import Request, Response, make_response
from conclave.sip.transaction import ClientTransaction, ServerTransaction, make_cancel
from conclave.sip.uri import URI
from conclave.transport.flow import Flow

from .local import LocalEndpoint
from .stack import SipStack, new_branch

log = structlog.get_logger("conclave.proxy")

TIMER_C = 180.0
"""RFC 3261 §16.8: an INVITE branch that has rung for this long without a
final answer is cancelled. Must be more than 3 minutes; we use exactly 3."""

DEFAULT_MAX_FORWARDS = 70
"""§16.6 step 3: added when the request arrived without Max-Forwards."""

DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
"""Requests that can create a dialog, and so get Record-Route (§16.6 step 4)."""


@dataclass(frozen=True)
class Target:
    """Where one branch goes: the new Request-URI and the flow to send on."""

    uri: URI
    flow: Flow


@dataclass(eq=False)
class Branch:
    context: ProxyContext
    target: Target
    request: Request
    txn: ClientTransaction | None = None
    provisional: bool = False
    final: Response | None = None
    cancel_wanted: bool = False
    cancelled: bool = False
    timer_c: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        return self.final is not None


@dataclass(eq=False)
class ProxyContext:
    server_txn: ServerTransaction
    request: Request
    branches: list[Branch] = field(default_factory=list)
    final_sent: bool = False
    best: Response | None = None
    on_final: Callable[[int], None] | None = None


class Proxy:
    """Forwards requests to targets and responses back, statefully."""

    def __init__(self, stack: SipStack, local: LocalEndpoint) -> None:
        self.stack = stack
        self.local = local
        self._contexts: dict[ServerTransaction, ProxyContext] = {}
        self._branches: dict[ClientTransaction, Branch] = {}

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
        on_final: Callable[[int], None] | None = None,
    ) -> None:
        """Fork ``request`` to every target in parallel (§16.5, §16.6)."""
        context = ProxyContext(server_txn, request, on_final=on_final)
        self._contexts[server_txn] = context
        for target in targets:
            branch_req = self._branch_request(request, target, inbound)
            branch = Branch(context, target, branch_req)
            context.branches.append(branch)
        for branch in context.branches:
            try:
                branch.txn = self.stack.send_request(branch.request, branch.target.flow)
            except LocalProtocolError as exc:
                log.warning("branch not started", reason=str(exc))
                branch.final = make_response(branch.request, 503, "Service Unavailable")
                continue
            self._branches[branch.txn] = branch
        self._maybe_finish(context)

    def _branch_request(self, request: Request, target: Target, inbound: Flow) -> Request:
        headers = request.headers.copy()
        max_forwards = headers.get("Max-Forwards")
        remaining = (
            DEFAULT_MAX_FORWARDS if max_forwards is None else parse_max_forwards(max_forwards)
        )
        headers.set("Max-Forwards", str(max(remaining - 1, 0)))
        # §22.3: credentials for our realm were consumed here; do not pass them on.
        headers.remove("Proxy-Authorization")
        if request.method in DIALOG_METHODS:
            # RFC 5658 double Record-Route: the entry nearer the callee (top)
            # is reached from the target's side and leads back to the caller's
            # flow; the lower one is reached from the caller's side.
            headers.prepend("Record-Route", self.local.record_route(inbound, toward=target.flow))
            headers.prepend("Record-Route", self.local.record_route(target.flow, toward=inbound))
        branch = f"{new_branch()}.{loop_hash(request)}"
        headers.prepend("Via", self.local.via(target.flow.transport, branch))
        return Request(request.method, target.uri, headers, request.body, request.version)

    def is_loop(self, request: Request) -> bool:
        """§16.3 step 4: the request already passed here *unchanged* (482).

        A request that comes back with our Via on it but a different
        Request-URI or other routing input is a spiral, which is legal;
        the branch we wrote carries a hash of those inputs to tell the two
        apart (§16.6 step 8).
        """
        current = loop_hash(request)
        for value in request.headers.get_all("Via"):
            try:
                via = peek_via(value)
            except RemoteProtocolError:
                continue
            if via.sent_by.lower() not in self.local.own_sent_by():
                continue
            branch = via.branch or ""
            if branch.rpartition(".")[2] == current:
                return True
        return False

    # -- responses -----------------------------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: Response) -> bool:
        """A response on one of our branches; False if ``txn`` is not ours."""
        branch = self._branches.get(txn)
        if branch is None:
            return False
        context = branch.context
        status = response.status
        if status < 200:
            if not branch.provisional:
                branch.provisional = True
                if branch.cancel_wanted:
                    self._send_cancel(branch)
                elif txn.is_invite:
                    self._start_timer_c(branch)
            if status > 100 and not context.final_sent:
                self._relay(context, response)
            return True
        self._stop_timer_c(branch)
        if branch.final is None:
            branch.final = response
        if 200 <= status < 300:
            # §16.7 step 5: every 2xx is forwarded, even after another 2xx.
            self._relay(context, response, final=True)
            if txn.is_invite:
                self._cancel_others(context, branch)
        elif status >= 600:
            self._cancel_others(context, branch)
        self._maybe_finish(context)
        return True

    def on_timeout(self, txn: ClientTransaction) -> bool:
        """Timer B/F (or a transport failure): the branch answers 408 (§16.8)."""
        return self._synthesise(txn, 408, "Request Timeout")

    def on_transport_failed(self, txn: ClientTransaction) -> bool:
        return self._synthesise(txn, 503, "Service Unavailable")

    def _synthesise(self, txn: ClientTransaction, status: int, reason: str) -> bool:
        branch = self._branches.get(txn)
        if branch is None:
            return False
        self._stop_timer_c(branch)
        if branch.final is None:
            branch.final = make_response(branch.request, status, reason)
        self._maybe_finish(branch.context)
        return True

    def on_terminated(self, txn: object) -> None:
        if isinstance(txn, ClientTransaction):
            branch = self._branches.pop(txn, None)
            if branch is not None:
                self._stop_timer_c(branch)
        elif isinstance(txn, ServerTransaction):
            context = self._contexts.pop(txn, None)
            if context is not None:
                for branch in context.branches:
                    self._stop_timer_c(branch)

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

    # -- Timer C -------------------------------------------------------------------------
    def _start_timer_c(self, branch: Branch) -> None:
        loop = asyncio.get_running_loop()
        branch.timer_c = loop.call_later(TIMER_C, self._timer_c_fired, branch)

    def _stop_timer_c(self, branch: Branch) -> None:
        if branch.timer_c is not None:
            branch.timer_c.cancel()
            branch.timer_c = None

    def _timer_c_fired(self, branch: Branch) -> None:
        branch.timer_c = None
        log.info("timer C fired; cancelling branch", target=str(branch.target.uri))
        self._request_cancel(branch)

    # -- choosing and relaying -----------------------------------------------------------
    def _maybe_finish(self, context: ProxyContext) -> None:
        if context.final_sent or not all(b.done for b in context.branches):
            return
        finals = [b.final for b in context.branches if b.final is not None]
        best = choose_best(finals) if finals else None
        if best is None:
            self.stack.respond(context.server_txn, 480, "Temporarily Unavailable")
            self._finished(context, 480)
            return
        if best.status == 503:
            # §16.7 step 6: a 503 from downstream means that element is busy,
            # not this one; pass it on as 500.
            best = Response(500, "Server Internal Error", best.headers.copy(), best.body)
        self._relay(context, best, final=True)

    def _relay(self, context: ProxyContext, response: Response, *, final: bool = False) -> None:
        out = Response(
            response.status,
            response.reason,
            response.headers.copy(),
            response.body,
            response.version,
        )
        out.headers.pop_first("Via")  # our own (§16.7 step 3)
        if not out.headers.get("Via"):
            return
        if final and context.final_sent:
            # Another fork's 2xx (§16.7 step 5): through the transaction while
            # it is Accepted (RFC 6026), else statelessly.
            extra_2xx = 200 <= response.status < 300
            if extra_2xx and not self.stack.send_response(context.server_txn, out):
                flow = context.server_txn.source
                if isinstance(flow, Flow):
                    self.stack.send_stateless(out, flow)
            return
        if final:
            self._finished(context, response.status)
        self.stack.send_response(context.server_txn, out)

    def _finished(self, context: ProxyContext, status: int) -> None:
        context.final_sent = True
        if context.on_final is not None:
            context.on_final(status)


def loop_hash(request: Request) -> str:
    """A digest of the request's routing inputs (§16.6 step 8, §16.3 step 4)."""
    to = request.headers.get("To") or ""
    sender = request.headers.get("From") or ""
    cseq = (request.headers.get("CSeq") or "").split(" ", 1)[0]
    parts = [
        str(request.uri),
        peek_name_addr(sender).tag or "" if sender else "",
        peek_name_addr(to).tag or "" if to else "",
        request.headers.get("Call-ID") or "",
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
