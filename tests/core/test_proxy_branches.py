"""The proxy with the real stack and transaction layer, on an in-memory sender.

Issue 12 item 8: a branch whose first send fails at once used to be reported
before the proxy had recorded it, so the caller never got an answer and the
server transaction leaked. Each branch now owns its client transaction from
before the first send.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conclave.core.dialogs import DialogTable
from conclave.core.proxy import Proxy, Target
from conclave.core.stack import SipStack
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response
from conclave.sip.parser import parse_message
from conclave.sip.transaction import ServerTransaction, TransactionLayer
from conclave.sip.uri import parse_uri
from conclave.transport.guard import SourceGuard

CALLER = Flow("udp", ("127.0.0.1", 40000), ("127.0.0.1", 5060))
CALLEE = Flow("udp", ("127.0.0.1", 40001), ("127.0.0.1", 5060))
CALLEE2 = Flow("udp", ("127.0.0.1", 40002), ("127.0.0.1", 5060))


class Wire:
    """The transport: records what is sent; refuses sends to ``dead`` flows."""

    def __init__(self, dead: set[Flow]) -> None:
        self.dead = dead
        self.sent: list[tuple[Flow, bytes]] = []

    def send(self, flow: Flow, data: bytes) -> bool:
        if flow in self.dead:
            return False
        self.sent.append((flow, data))
        return True

    def to(self, flow: Flow) -> list[Request | Response]:
        return [parse_message(data) for dest, data in self.sent if dest == flow]


class Collector:
    """A transaction user that keeps the server transactions it is given."""

    def __init__(self) -> None:
        self.txns: list[ServerTransaction] = []

    def on_request(self, txn: ServerTransaction, request: Request) -> None:
        self.txns.append(txn)

    def on_cancel(self, *args: Any) -> None: ...
    def on_ack(self, *args: Any) -> None: ...
    def on_stray_response(self, *args: Any) -> None: ...

    def on_terminated(self, txn: Any) -> None:
        self.terminated = txn


def invite() -> bytes:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKcaller1;rport")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:alice@example.test>;tag=a1")
    h.add("To", "<sip:bob@example.test>")
    h.add("Call-ID", "call-1")
    h.add("CSeq", "1 INVITE")
    h.add("Contact", "<sip:alice@127.0.0.1:40000>")
    return Request("INVITE", parse_uri("sip:bob@example.test"), h).serialise()


async def proxied(dead: set[Flow], targets: list[Flow]) -> tuple[Wire, Proxy]:
    stack = SipStack(layer=TransactionLayer(), guard=SourceGuard(), supported=frozenset())
    wire, tu = Wire(dead), Collector()
    stack.attach(tu, wire)
    local = LocalEndpoint(host="127.0.0.1", domain="example.test", ports={"udp": 5060})
    proxy = Proxy(stack, local, DialogTable())
    stack.on_message(invite(), CALLER)
    (txn,) = tu.txns
    proxy.forward(
        txn,
        txn.request,
        [Target(parse_uri(f"sip:bob@127.0.0.1:{f.remote[1]}"), f) for f in targets],
        inbound=CALLER,
        sender="sip:alice@example.test",
    )
    stack.stop()
    return wire, proxy


def test_a_branch_that_fails_at_once_answers_the_caller() -> None:
    wire, proxy = asyncio.run(proxied({CALLEE}, [CALLEE]))
    finals = [m for m in wire.to(CALLER) if isinstance(m, Response) and m.status >= 200]
    # §16.7 step 6: the branch's 503 is chosen and passed on as 500.
    assert [m.status for m in finals] == [500]
    assert proxy.pending() == 0
    assert len(proxy.dialogs) == 0  # the attempt's dialog closed with it


def test_one_dead_branch_does_not_stop_the_others() -> None:
    wire, proxy = asyncio.run(proxied({CALLEE}, [CALLEE, CALLEE2]))
    assert not [m for m in wire.to(CALLER) if isinstance(m, Response) and m.status >= 200]
    (forwarded,) = wire.to(CALLEE2)
    assert isinstance(forwarded, Request) and forwarded.method == "INVITE"
    assert proxy.pending() == 1  # waiting on the live branch
