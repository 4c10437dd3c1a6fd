"""An in-memory network with a stepped clock: scripted user agents and the real core.

The server under test is the production assembly of ``Server._wire``: the real
:class:`~conclave.core.stack.SipStack` and transaction layer, router, sign-in,
proxy and dialog table, and every feature :func:`conclave.wiring.build_features`
builds from a default :class:`~conclave.config.Config`, on a real SQLite file
database. Only the edges are replaced:

* the transport is a :class:`Network`: the stack's ``sender`` and the router's
  ``reach``. What the server sends goes, as bytes, into the inbox of the
  :class:`UserAgent` that owns the flow. The network can refuse a send at once
  (:meth:`Network.fail`), swallow packets (:meth:`Network.drop`) and close a
  connection (:meth:`Network.close`: the flow-closed path, as the transport
  manager reports it to the server);
* the SIP timers (transaction Timers A-K, Timer C) run on a
  :class:`ManualScheduler`: nothing fires until a script calls
  :meth:`ManualScheduler.advance`, which fires every timer due in the interval,
  in order. No test sleeps.

Asynchronous work (the offline store's writes, offline delivery) runs on the
asyncio loop that :func:`play` creates; a script awaits it with
:meth:`Core.settle` and :meth:`UserAgent.next_request`, both bounded by
:data:`ASYNC_BOUND`. Wall-clock time (registration expiry, nonces, CDR
timestamps) stays the real ``time.time``, as in production: the conversations
last milliseconds of it.

A :class:`UserAgent` is scripted, not automatic: it sends what the script tells
it to and answers nothing by itself, so a conversation reads as a scansion
script does (client A sends this, server answers that). It builds requests the
way a SIP client would (RFC 3261 §8.1, §12.2, §22) and parses every byte the
server sends it, so the server's output is checked as wire data.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conclave.config import Config, config_from_mapping
from conclave.core.auth import CredentialCache, UserCredentials
from conclave.core.router import SUPPORTED
from conclave.core.stack import SipStack
from conclave.ops.metrics import REGISTRY
from conclave.services.location import Contact, MemoryLocationService
from conclave.sip.address import peek_name_addr
from conclave.sip.digest import authorization_value, ha1_by_algorithm, parse_challenge
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response, make_response
from conclave.sip.parser import parse_message
from conclave.sip.transaction import TransactionLayer, make_cancel
from conclave.sip.uri import parse_uri
from conclave.store import Database, migrate
from conclave.transport.guard import SourceGuard
from conclave.wiring import assemble

DOMAIN = "example.test"
SERVER_IP = "10.0.0.1"
PORTS = {"tls": 5061, "udp": 5060}
PASSWORDS = {
    "alice": "alice in wonderland",
    "bob": "bob the builder",
    "carol": "carol of the bells",
}
ASYNC_BOUND = 10.0
"""Longest a script waits for asynchronous work (a SQLite write on the loop's
executor) before it fails: a bound on a hung test, never a delay."""

START = 1000.0
"""Where the stepped clock starts: any value works, none is special."""

TIMER_B = TIMER_F = 32.0
"""64*T1 with the default T1 of 500 ms (RFC 3261 §17.1.1.2, §17.1.2.2)."""

NOTHING_LEFT = {"proxied requests": 0, "transactions": 0, "background tasks": 0, "timers": 0}
"""What :meth:`Core.leaks` says when the core holds nothing for finished work."""


# -- the stepped clock ----------------------------------------------------------------------
@dataclass(eq=False)
class Timer:
    """One scheduled callback (the :class:`~conclave.core.stack.Cancellable` shape)."""

    when: float
    callback: Callable[..., object]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """A :class:`~conclave.core.stack.Scheduler` whose time moves only in :meth:`advance`."""

    def __init__(self, start: float = START) -> None:
        self.now = start
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = Timer(when, callback, args)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        return self.call_at(self.now + delay, callback, *args)

    def advance(self, seconds: float) -> int:
        """Move time forward by ``seconds``, firing every timer due on the way in
        order of its deadline (and of scheduling, for equal deadlines), with the
        clock reading each timer's own deadline while it runs. Timers scheduled
        by a callback fire too if they fall inside the interval. Returns how
        many fired."""
        assert seconds >= 0
        end = self.now + seconds
        fired = 0
        while self._heap and self._heap[0][0] <= end:
            when, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback(*timer.args)
            fired += 1
        self.now = end
        return fired

    def pending(self) -> int:
        """Timers still scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)


# -- the network ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Packet:
    """One send by the server, and what the network did with it."""

    flow: Flow
    data: bytes
    fate: str
    """``delivered``, ``dropped`` (lost on the way), ``refused`` (the send
    failed at once), ``closed`` (the connection is gone) or ``nowhere`` (no
    agent owns the flow)."""


class Network:
    """The transport as the core sees it: the stack's sender and the router's reach."""

    def __init__(self) -> None:
        self.agents: dict[Flow, UserAgent] = {}
        self.sent: list[Packet] = []
        self.refusing: set[Flow] = set()
        self.dropping: set[Flow] = set()
        self.closed: set[Flow] = set()
        self.on_closed: list[Callable[[Flow], None]] = []
        self.changed = asyncio.Event()

    # -- Sender ----------------------------------------------------------------------------
    def send(self, flow: Flow, data: bytes) -> bool:
        agent = self.agents.get(flow)
        if flow in self.closed:
            fate = "closed"
        elif flow in self.refusing:
            fate = "refused"
        elif flow in self.dropping:
            fate = "dropped"
        elif agent is None:
            fate = "nowhere"
        else:
            fate = "delivered"
        self.sent.append(Packet(flow, data, fate))
        if fate == "delivered":
            assert agent is not None
            agent.inbox.append(parse_message(data, datagram=not flow.reliable))
            self.changed.set()
        return fate in ("delivered", "dropped")

    # -- Reach -----------------------------------------------------------------------------
    def usable(self, flow: Flow) -> Flow | None:
        """A closed connection is gone for good; everything else still reaches its peer
        (a flow that refuses sends looks usable until the write fails)."""
        return None if flow in self.closed else flow

    # -- faults ----------------------------------------------------------------------------
    def fail(self, flow: Flow) -> None:
        """Every send to ``flow`` fails at once (a full buffer, a reset under the write)."""
        self.refusing.add(flow)

    def drop(self, flow: Flow) -> None:
        """Packets to ``flow`` are lost on the way: the send succeeds, nothing arrives."""
        self.dropping.add(flow)

    def close(self, flow: Flow) -> None:
        """The connection closes: sends fail, and the server hears of it."""
        self.closed.add(flow)
        for listener in self.on_closed:
            listener(flow)

    # -- inspection ------------------------------------------------------------------------
    def mark(self) -> int:
        """A point in :attr:`sent` to compare with later (:meth:`since`)."""
        return len(self.sent)

    def since(self, mark: int) -> list[Packet]:
        return self.sent[mark:]


# -- the server under test ------------------------------------------------------------------
def migrated_database(directory: Path) -> Path:
    """A migrated SQLite file in ``directory`` (migrate once, copy per test)."""
    path = directory / "conclave.db"
    migrate(f"sqlite:///{path}")
    return path


class Core:
    """The real stack, router, proxy and features, built by :func:`conclave.wiring.assemble`
    as ``Server._wire`` builds them."""

    def __init__(self, db: Database, data_dir: Path, config: Config | None = None) -> None:
        self.db = db
        self.config = config or config_from_mapping(
            {"server": {"domain": DOMAIN, "host": SERVER_IP}}
        )
        self.clock = ManualScheduler()
        self.network = Network()
        self.layer = TransactionLayer()
        self.guard = SourceGuard()
        self.stack = SipStack(layer=self.layer, guard=self.guard, supported=frozenset(SUPPORTED))
        self.local = LocalEndpoint(
            host=SERVER_IP, domain=DOMAIN, ports=dict(PORTS), addresses={SERVER_IP}
        )
        self.location = MemoryLocationService()
        self.users = CredentialCache()
        self.users.replace(
            {
                name: UserCredentials(ha1_by_algorithm(name, DOMAIN, password))
                for name, password in PASSWORDS.items()
            }
        )
        built = assemble(
            self.config,
            data_dir,
            db,
            stack=self.stack,
            local=self.local,
            location=self.location,
            users=self.users,
            guard=self.guard,
            reach=self.network,
        )
        self.host, self.features = built.host, built.features
        self.proxy, self.router = built.proxy, built.router
        self.dialogs = self.proxy.dialogs
        self.stack.attach(self.router, self.network, self.clock)
        self.network.on_closed.append(self._on_closed)
        self._ports = itertools.count(1)

    def _on_closed(self, flow: Flow) -> None:
        self.location.remove_flow(flow)  # what Server._on_closed does

    async def start(self) -> None:
        for feature in self.features.values():
            await feature.start()

    async def stop(self) -> None:
        for feature in self.features.values():
            await feature.close()
        await self.host.settle()
        self.stack.stop()

    # -- agents ----------------------------------------------------------------------------
    def agent(self, user: str, *, transport: str = "tls") -> UserAgent:
        """A new device of ``user`` with a connection (or UDP path) of its own."""
        n = next(self._ports)
        remote = (f"192.0.2.{n}", 50000 + n)
        local = (SERVER_IP, PORTS[transport])
        flow = Flow(transport, remote, local, n if transport != "udp" else 0)
        agent = UserAgent(self, user, PASSWORDS.get(user, "not a password"), flow)
        self.network.agents[flow] = agent
        return agent

    # -- time and background work ----------------------------------------------------------
    def advance(self, seconds: float) -> int:
        """Let ``seconds`` of SIP time pass (transaction timers, Timer C)."""
        return self.clock.advance(seconds)

    async def settle(self) -> None:
        """Wait (bounded) until every background task has finished: the core's
        (:meth:`FeatureHost.spawn`) and the features' own (offline delivery)."""
        me = asyncio.current_task()
        async with asyncio.timeout(ASYNC_BOUND):
            while others := asyncio.all_tasks() - {me}:
                await asyncio.gather(*others, return_exceptions=True)

    def bindings(self, aor: str) -> list[Contact]:
        """``aor``'s registered devices now (registrations expire on the wall clock)."""
        return self.location.lookup(aor, time.time())

    def quiet(self) -> None:
        """Let every transaction run out its timers (64*T1 covers Timers B-K)."""
        self.advance(64 * self.layer.config.T1 + self.layer.config.T4)

    def leaks(self) -> dict[str, int]:
        """What the core still holds for finished work; all zero when nothing leaked."""
        return {
            "proxied requests": self.proxy.pending(),
            "transactions": len(self.layer),
            "background tasks": self.host.pending(),
            "timers": self.clock.pending(),
        }


def stray_dropped() -> float:
    """The counter of responses that matched nothing and were dropped."""
    return REGISTRY.get_sample_value("conclave_stray_responses_dropped_total") or 0.0


def is_server_via(value: str) -> bool:
    """True for a Via value this server wrote."""
    return f" {SERVER_IP}:" in value


def call_both(core: Core) -> tuple[UserAgent, UserAgent, UserAgent, Request]:
    """Alice, Bob's phone and desk set (all signed in), and Alice's signed INVITE to Bob."""
    alice, phone, desk = core.agent("alice"), core.agent("bob"), core.agent("bob")
    for device in (alice, phone, desk):
        device.sign_in()
    invite = alice.send_signed(alice.invite("bob"))
    return alice, phone, desk, invite


def established_call(caller: UserAgent, callee: UserAgent) -> tuple[Request, Request, Dialog]:
    """``caller`` calls ``callee`` (both signed in), who answers 200; the ACK
    reaches the callee. The INVITE as sent and as received, and the caller's dialog."""
    invite = caller.send_signed(caller.invite(callee.user))
    ringing = callee.expect_request("INVITE")
    callee.answer(ringing, 200)
    dialog = caller.dialog_as_caller(invite, caller.expect_response(200))
    caller.send(caller.in_dialog(dialog, "ACK"))
    callee.expect_request("ACK")
    return invite, ringing, dialog


def play(template: Path, data_dir: Path, script: Callable[[Core], Awaitable[None]]) -> None:
    """Run ``script`` against a fresh core on a copy of the migrated ``template``
    database, in its own event loop (bounded by pytest's timeout)."""
    path = data_dir / "conclave.db"
    shutil.copyfile(template, path)

    async def main() -> None:
        db = Database(f"sqlite:///{path}")
        core = Core(db, data_dir)
        try:
            await core.start()
            await script(core)
        finally:
            await core.stop()
            await db.dispose()

    asyncio.run(main())


# -- scripted user agents -------------------------------------------------------------------
@dataclass
class Dialog:
    """One side's view of a dialog (RFC 3261 §12.1): what in-dialog requests carry."""

    call_id: str
    local_uri: str
    local_tag: str
    remote_uri: str
    remote_tag: str
    remote_target: str
    route_set: list[str]
    cseq: int


@dataclass
class UserAgent:
    """One device of one user, driven by a script; it never answers on its own."""

    core: Core
    user: str
    password: str
    flow: Flow
    inbox: list[Request | Response] = field(default_factory=list)
    sent: list[Request | Response] = field(default_factory=list)
    challenge: str | None = None
    """The last challenge (WWW- or Proxy-Authenticate value) it was given."""
    _nc: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _cseq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    """CSeq numbers of new requests: rising across the device's requests, so
    REGISTER refreshes on one Call-ID are in order (§10.2.4)."""
    _tags: dict[str, str] = field(default_factory=dict)
    """The To tag this device answers each received request's Call-ID with."""

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{DOMAIN}"

    @property
    def contact(self) -> str:
        ip, port = self.flow.remote
        return f"<sip:{self.user}@{ip}:{port};transport={self.flow.transport}>"

    def _id(self, what: str) -> str:
        return f"{self.user}-{what}-{self.flow.remote[1]}-{next(self._ids)}"

    def _via(self) -> str:
        ip, port = self.flow.remote
        return (
            f"SIP/2.0/{self.flow.transport.upper()} {ip}:{port};branch=z9hG4bK{self._id('b')};rport"
        )

    # -- building requests (RFC 3261 §8.1.1) -----------------------------------------------
    def request(
        self,
        method: str,
        uri: str,
        *,
        to: str | None = None,
        to_tag: str | None = None,
        from_tag: str | None = None,
        call_id: str | None = None,
        cseq: int | None = None,
        routes: list[str] | tuple[str, ...] = (),
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> Request:
        h = Headers()
        h.add("Via", self._via())
        for route in routes:
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", f"<{self.aor}>;tag={from_tag or self._id('tag')}")
        h.add("To", f"<{to or uri}>" + (f";tag={to_tag}" if to_tag else ""))
        h.add("Call-ID", call_id or self._id("call"))
        h.add("CSeq", f"{cseq if cseq is not None else next(self._cseq)} {method}")
        h.add("Contact", self.contact)
        for name, value in headers:
            h.add(name, value)
        if body and "Content-Type" not in h:
            h.add("Content-Type", "text/plain")
        return Request(method, parse_uri(uri), h, body)

    def register(self, *, expires: int | None = 3600, contact: bool = True) -> Request:
        headers = (("Expires", str(expires)),) if expires is not None else ()
        request = self.request(
            "REGISTER", f"sip:{DOMAIN}", to=self.aor, headers=headers, call_id=self._reg_call_id
        )
        if not contact:
            request.headers.remove("Contact")
        return request

    @property
    def _reg_call_id(self) -> str:
        # One Call-ID for every REGISTER of a device, with a rising CSeq (§10.2.4).
        return f"{self.user}-reg-{self.flow.remote[1]}"

    def message(self, to_user: str, text: str) -> Request:
        return self.request("MESSAGE", f"sip:{to_user}@{DOMAIN}", body=text.encode())

    def invite(self, to_user: str) -> Request:
        return self.request(
            "INVITE",
            f"sip:{to_user}@{DOMAIN}",
            headers=(("Content-Type", "application/sdp"),),
            body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.99\r\ns=-\r\nt=0 0\r\n",
        )

    def cancel(self, invite: Request) -> Request:
        """The CANCEL of ``invite`` (§9.1: its Via branch, Call-ID, tags and CSeq number)."""
        return make_cancel(invite)

    def ack(self, invite: Request, response: Response) -> Request:
        """The ACK of a non-2xx final response: hop by hop, the INVITE's branch (§17.1.1.3)."""
        assert response.status >= 300
        h = Headers()
        h.add("Via", invite.headers.get_all("Via")[0])
        h.add("Max-Forwards", "70")
        h.add("From", invite.headers.get("From") or "")
        h.add("To", response.headers.get("To") or "")
        h.add("Call-ID", invite.call_id or "")
        h.add("CSeq", f"{_cseq_number(invite)} ACK")
        return Request("ACK", invite.uri, h)

    def dialog_as_caller(self, invite: Request, response: Response) -> Dialog:
        """The caller's dialog from a 2xx (§12.1.2): route set is the Record-Route reversed."""
        return Dialog(
            call_id=invite.call_id or "",
            local_uri=self.aor,
            local_tag=_tag(invite.headers.get("From")),
            remote_uri=str(peek_name_addr(invite.headers.get("To") or "").uri),
            remote_tag=_tag(response.headers.get("To")),
            remote_target=_uri(response.headers.get("Contact")),
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            cseq=_cseq_number(invite),
        )

    def dialog_as_callee(self, invite: Request) -> Dialog:
        """The callee's dialog from the request it answered 2xx (§12.1.1)."""
        call_id = invite.call_id or ""
        return Dialog(
            call_id=call_id,
            local_uri=self.aor,
            local_tag=self._tags[call_id],
            remote_uri=str(peek_name_addr(invite.headers.get("From") or "").uri),
            remote_tag=_tag(invite.headers.get("From")),
            remote_target=_uri(invite.headers.get("Contact")),
            route_set=invite.headers.get_all("Record-Route"),
            cseq=0,
        )

    def in_dialog(self, dialog: Dialog, method: str, *, cseq: int | None = None) -> Request:
        """A request inside ``dialog`` (§12.2.1.1): remote target, route set, both tags."""
        if method != "ACK":
            dialog.cseq += 1
        return self.request(
            method,
            dialog.remote_target,
            to=dialog.remote_uri,
            to_tag=dialog.remote_tag,
            from_tag=dialog.local_tag,
            call_id=dialog.call_id,
            cseq=cseq if cseq is not None else dialog.cseq,
            routes=dialog.route_set,
        )

    # -- authentication (§22) --------------------------------------------------------------
    def with_credentials(self, request: Request, challenge: str | None = None) -> Request:
        """``request`` again as a new transaction (new branch, next CSeq) with
        credentials answering ``challenge`` (default: the last one received)."""
        value = challenge or self.challenge
        assert value is not None, f"{self.user} has not been challenged"
        parsed = parse_challenge(value)
        self._nc += 1
        credentials = authorization_value(
            parsed,
            username=self.user,
            password=self.password,
            method=request.method,
            uri=str(request.uri),
            cnonce=self._id("cnonce"),
            nc=self._nc,
        )
        headers = request.headers.copy()
        headers.replace_first("Via", self._via())
        headers.set("CSeq", f"{next(self._cseq)} {request.method}")
        header = "Authorization" if request.method == "REGISTER" else "Proxy-Authorization"
        headers.remove("Authorization")
        headers.remove("Proxy-Authorization")
        headers.add(header, credentials)
        return Request(request.method, request.uri, headers, request.body)

    def retry_with_credentials(self, challenged: Response) -> Request:
        """Answer ``challenged`` (401/407 to the last request sent): send it again, signed."""
        last = next(
            m
            for m in reversed(self.sent)
            if isinstance(m, Request) and m.method not in ("ACK", "CANCEL")
        )
        request = self.with_credentials(last)
        self.send(request)
        return request

    def send_signed(self, request: Request) -> Request:
        """Send ``request`` with credentials for the nonce it was last given (as
        clients do, so the server does not challenge every request)."""
        signed = self.with_credentials(request)
        self.send(signed)
        return signed

    def sign_in(self, *, expires: int = 3600) -> Response:
        """REGISTER, be challenged (401), REGISTER with credentials: the 200."""
        self.send(self.register(expires=expires))
        self.retry_with_credentials(self.expect_response(401))
        return self.expect_response(200)

    # -- the wire --------------------------------------------------------------------------
    def send(self, message: Request | Response) -> None:
        """Put ``message`` on this device's flow toward the server."""
        self.sent.append(message)
        self.core.stack.on_message(message.serialise(), self.flow)

    def send_raw(self, data: bytes) -> None:
        """Put bytes on the flow as they are (a frame or datagram that may not parse)."""
        self.core.stack.on_message(data, self.flow)

    def receive(self) -> Request | Response:
        """The next message the server sent here (a 100 Trying is hop-by-hop noise: skipped)."""
        while self.inbox:
            message = self.inbox.pop(0)
            if isinstance(message, Response) and message.status == 100:
                continue
            if isinstance(message, Response):
                for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                    if (value := message.headers.get(name)) is not None:
                        self.challenge = value
            return message
        raise AssertionError(f"{self.user} at {self.flow} received nothing")

    def expect_response(self, status: int) -> Response:
        message = self.receive()
        assert isinstance(message, Response), f"{self.user} expected {status}, got {message}"
        assert message.status == status, (
            f"{self.user} expected {status}, got {message.status} {message.reason}"
        )
        return message

    def expect_request(self, method: str) -> Request:
        message = self.receive()
        assert isinstance(message, Request), f"{self.user} expected {method}, got {message}"
        assert message.method == method, f"{self.user} expected {method}, got {message.method}"
        return message

    async def next_request(self, method: str) -> Request:
        """Wait (bounded) for a request the server sends from background work."""
        async with asyncio.timeout(ASYNC_BOUND):
            while not any(isinstance(m, Request) for m in self.inbox):
                self.core.network.changed.clear()
                await self.core.network.changed.wait()
        return self.expect_request(method)

    def expect_nothing(self) -> None:
        rest = [m for m in self.inbox if not (isinstance(m, Response) and m.status == 100)]
        assert not rest, f"{self.user} received {[_summary(m) for m in rest]}"
        self.inbox.clear()

    def answer(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        """Send a response to ``request``, tagged with this device's tag for its Call-ID."""
        tag = self._tags.setdefault(request.call_id or "", self._id("tag"))
        extra = headers
        if status < 300 and request.method in ("INVITE", "SUBSCRIBE"):
            extra = (*headers, ("Contact", self.contact))
        if status < 300 and request.method == "INVITE":
            extra = (
                *extra,
                *(("Record-Route", v) for v in request.headers.get_all("Record-Route")),
            )
        response = make_response(request, status, reason, to_tag=tag, headers=extra)
        self.send(response)
        return response


def _cseq_number(request: Request) -> int:
    return int((request.headers.get("CSeq") or "0").split()[0])


def _tag(value: str | None) -> str:
    tag = peek_name_addr(value or "").tag
    assert tag, f"no tag in {value!r}"
    return tag


def _uri(value: str | None) -> str:
    assert value, "no Contact"
    return str(peek_name_addr(value).uri)


def _summary(message: Request | Response) -> str:
    if isinstance(message, Request):
        return f"{message.method} {message.uri}"
    return f"{message.status} {message.reason}"
