"""A presence service on a fake stack and a stepped clock: no sockets, no sleeping.

Imported by the ``test_service*`` and ``test_subscriptions*`` modules. Every
identifier the service generates (tags, branches, entity tags) comes from a
counter, so two harnesses driven the same way produce byte-identical
messages -- which is how Blocked is compared with Offline.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from conclave.core.stack import ClientOwner
from conclave.services.presence.directory import Directory
from conclave.services.presence.service import PresenceService
from conclave.services.presence.settings import PresenceSettings
from conclave.sip.address import parse_name_addr
from conclave.sip.fields import parse_subscription_state
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response, make_response
from conclave.sip.transaction import ClientTransaction, ServerTransaction, TimerConfig
from conclave.sip.uri import parse_uri

DOMAIN = "example.test"
HOST = "127.0.0.1"
USERS = ("alice", "bob", "carol", "dave")


def aor(user: str, domain: str = DOMAIN) -> str:
    return f"sip:{user}@{domain}"


def pidf(
    user: str,
    *,
    basic: str = "open",
    activity: str | None = None,
    other: str | None = None,
    note: str | None = None,
    domain: str = DOMAIN,
) -> bytes:
    """A PIDF a client would publish."""
    acts = ""
    if activity or other:
        inner = (f"<rpid:{activity}/>" if activity else "") + (
            f"<rpid:other>{other}</rpid:other>" if other else ""
        )
        acts = f"<rpid:activities>{inner}</rpid:activities>"
    note_xml = f"<dm:note>{note}</dm:note>" if note else ""
    person = f'<dm:person id="p">{acts}{note_xml}</dm:person>' if acts or note_xml else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
        ' xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"'
        f' entity="sip:{user}@{domain}">'
        f'<tuple id="t"><status><basic>{basic}</basic></status></tuple>{person}</presence>'
    ).encode()


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class FakeStack:
    """Records responses and requests; answers nothing by itself."""

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.requests: list[tuple[Request, Flow, ClientTransaction]] = []
        self.refuse = False
        self.owners: dict[ClientTransaction, ClientOwner] = {}

    def respond(
        self,
        txn: ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> None:
        self.responses.append(
            make_response(
                txn.request,
                status,
                reason,
                to_tag=to_tag or "t0",
                headers=tuple(headers),
                body=body,
            )
        )

    def send_request(
        self, req: Request, flow: Flow, owner: ClientOwner | None = None
    ) -> ClientTransaction:
        txn = ClientTransaction(req, flow, reliable=True, config=TimerConfig())
        if owner is not None:
            self.owners[txn] = owner
        self.requests.append((req, flow, txn))
        if self.refuse:  # a connection that is gone: the layer terminates it at once
            txn.start(0.0)
            txn.transport_error(0.0)
            if owner is not None:  # and the stack reports it before returning
                owner.on_failure(txn, 503)
        return txn


@dataclass
class Dialog:
    """The subscriber's side of one subscription."""

    watcher: str
    uri: str
    call_id: str
    from_tag: str
    to_tag: str | None
    event: str
    flow: Flow
    cseq: int = 1
    notifies: list[Request] = field(default_factory=list)


def counter(prefix: str) -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


class Harness:
    """One presence service, its fake stack, clock and subscribers."""

    def __init__(
        self,
        *,
        users: Iterable[str] = USERS,
        settings: PresenceSettings | None = None,
        directory: Directory | None = None,
        auto_answer: bool = True,
    ) -> None:
        self.users = set(users)
        self.clock = Clock()
        self.stack = FakeStack()
        self.local = LocalEndpoint(host=HOST, domain=DOMAIN, ports={"tls": 5061, "udp": 5060})
        self.service = PresenceService(
            stack=self.stack,
            local=self.local,
            settings=settings or PresenceSettings(merge_window=0.0),
            user_exists=lambda name: name in self.users,
            clock=self.clock,
            tags=counter("srv"),
            branches=counter("z9hG4bKsrv"),
            etags=counter("etag"),
        )
        if directory is not None:
            self.service.apply_directory(directory)
        self.auto_answer = auto_answer
        self.log: list[tuple[float, Request]] = []
        self._answered = 0
        self._ids = itertools.count(1)

    # -- plumbing --------------------------------------------------------------------------
    def flow(self, n: int = 1, transport: str = "tls") -> Flow:
        return Flow(transport, ("127.0.0.1", 40000 + n), ("127.0.0.1", 5061), n)

    def request(
        self,
        method: str,
        uri: str,
        *,
        user: str,
        domain: str = DOMAIN,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        call_id: str | None = None,
        from_tag: str | None = None,
        to_tag: str | None = None,
        cseq: int = 1,
        contact: str | None = None,
    ) -> Request:
        h = Headers()
        h.add("Via", f"SIP/2.0/TLS 127.0.0.1:40001;branch=z9hG4bKc{next(self._ids)}")
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:{user}@{domain}>;tag={from_tag or 'ft' + user}")
        h.add("To", f"<{uri}>" + (f";tag={to_tag}" if to_tag else ""))
        h.add("Call-ID", call_id or f"call-{next(self._ids)}")
        h.add("CSeq", f"{cseq} {method}")
        h.add("Contact", contact or f"<sip:{user}@127.0.0.1:40001;transport=tls>")
        for name, value in headers:
            h.add(name, value)
        return Request(method, parse_uri(uri), h, body)

    def send(self, request: Request, *, user: str, flow: Flow | None = None) -> Response:
        flow = flow or self.flow()
        txn = ServerTransaction(request, flow, reliable=True)
        before = len(self.stack.responses)
        self.service.handle(txn, request, user=user, flow=flow)
        assert len(self.stack.responses) == before + 1, "exactly one answer per request"
        self.settle()
        return self.stack.responses[-1]

    def settle(self) -> None:
        """Record new NOTIFYs and (if auto_answer) answer them 200, until none is new."""
        while self._answered < len(self.stack.requests):
            req, _flow, txn = self.stack.requests[self._answered]
            self._answered += 1
            self.log.append((self.clock.now, req))
            if self.auto_answer and not txn.terminated:
                self.answer(req, txn, 200)

    def answer(self, req: Request, txn: ClientTransaction, status: int) -> None:
        self.stack.owners[txn].on_response(txn, make_response(req, status, to_tag="sub"))

    def fail(self, txn: ClientTransaction, status: int) -> None:
        """The NOTIFY on ``txn`` timed out (408) or could not be sent (503)."""
        self.stack.owners[txn].on_failure(txn, status)

    def apply(self, directory: Directory) -> None:
        """Swap in new contacts and privacy rules (what a reload does)."""
        self.service.apply_directory(directory)
        self.settle()

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.service.tick()
        self.settle()

    # -- verbs -----------------------------------------------------------------------------
    def publish(
        self,
        user: str,
        body: bytes | None = None,
        *,
        etag: str | None = None,
        expires: int | None = None,
        content_type: str = "application/pidf+xml",
        event: str = "presence",
        uri: str | None = None,
    ) -> Response:
        headers = [("Event", event)]
        if body:
            headers.append(("Content-Type", content_type))
        if etag:
            headers.append(("SIP-If-Match", etag))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        req = self.request(
            "PUBLISH", uri or aor(user), user=user, headers=headers, body=body or b""
        )
        return self.send(req, user=user)

    def subscribe(
        self,
        watcher: str,
        target: str,
        *,
        event: str = "presence",
        expires: int | None = 600,
        headers: Iterable[tuple[str, str]] = (),
        flow: Flow | None = None,
        domain: str = DOMAIN,
    ) -> tuple[Response, Dialog]:
        call_id = f"sub-{next(self._ids)}"
        flow = flow or self.flow()
        h = [("Event", event), *headers]
        if expires is not None:
            h.append(("Expires", str(expires)))
        req = self.request(
            "SUBSCRIBE", target, user=watcher, domain=domain, headers=h, call_id=call_id
        )
        resp = self.send(req, user=watcher, flow=flow)
        tag = parse_name_addr(resp.headers.get("To") or "").tag if resp.status < 300 else None
        dialog = Dialog(watcher, target, call_id, "ft" + watcher, tag, event, flow)
        return resp, dialog

    def refresh(
        self, dialog: Dialog, expires: int, *, flow: Flow | None = None, domain: str = DOMAIN
    ) -> Response:
        dialog.cseq += 1
        req = self.request(
            "SUBSCRIBE",
            f"sip:presence@{HOST}:5061;transport=tls",
            user=dialog.watcher,
            domain=domain,
            headers=[("Event", dialog.event), ("Expires", str(expires))],
            call_id=dialog.call_id,
            to_tag=dialog.to_tag,
            cseq=dialog.cseq,
        )
        req.headers.set("To", f"<{dialog.uri}>;tag={dialog.to_tag}")
        return self.send(req, user=dialog.watcher, flow=flow or dialog.flow)

    def notifies(self, dialog: Dialog) -> list[Request]:
        """NOTIFYs of ``dialog`` not yet looked at."""
        mine = [r for _, r in self.log if r.headers.get("Call-ID") == dialog.call_id]
        fresh = mine[len(dialog.notifies) :]
        dialog.notifies.extend(fresh)
        return fresh


def sub_state(notify: Request) -> tuple[str, str | None]:
    value = parse_subscription_state(notify.headers.get("Subscription-State") or "")
    return value.state, value.reason
