"""Instant messages for offline users (RFC 3428 MESSAGE, store and forward).

When a MESSAGE is addressed to a local user with no reachable device, the
router hands it here: it is written to the offline store (bounded per user
and in age) and the sender gets 202 Accepted (RFC 3428 §7). When the user
next registers, every stored message is sent to the registering device as
a new MESSAGE from the server, carrying the original ``From`` and ``Date``,
one at a time. A message leaves the store only when taken for delivery; if
delivery fails it is put back, so nothing is lost short of a crash in the
moment between the two.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from conclave.core.features import UNREACHABLE, Exchange, Feature, FeatureHost
from conclave.core.stack import ClientCallbacks, ClientOwner
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.message import Request, Response
from conclave.sip.transaction import ClientTransaction
from conclave.store.errors import StoreError
from conclave.store.offline import OfflineMessageStore, StoredMessage

from .location import Contact

if TYPE_CHECKING:
    from .setup import Setup

log = structlog.get_logger("conclave.services.im")

PURGE_INTERVAL = 10.0
"""Seconds between sweeps of held messages past ``[im] offline_max_age``."""
STORE_RETRY_AFTER = "30"
"""Retry-After (seconds) on 503 when a message for an offline user cannot be stored
because the back end is unreachable: long enough for a database failover."""


class Sender(Protocol):
    """The part of the core's SIP stack this service uses."""

    def send_request(
        self, req: Request, flow: Flow, owner: ClientOwner | None = None
    ) -> ClientTransaction: ...


ViaFactory = Callable[[Flow, str], str]
"""(flow, branch) -> our Via value for a request sent on that flow."""


@dataclass
class OfflineMessages:
    """Store-and-forward for MESSAGE requests to users who are offline."""

    store: OfflineMessageStore
    stack: Sender
    via: ViaFactory
    device_flow: Callable[[Contact], Flow | None] = field(default=lambda contact: contact.flow)
    """Where a request for a device goes (a remote user's: to the Edge on its Path)."""
    shared: bool = False
    """The back end is a pool's, which other Front Ends store into too: who has messages
    held cannot be known from here, so every registration checks (after its 200)."""
    _waiting: set[str] | None = None
    """Recipients with messages held, so a REGISTER of anyone else costs no
    database query; None until :meth:`load`, and always when ``shared`` (then every
    REGISTER checks)."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def load(self) -> None:
        """Learn who has messages held (at start-up, before serving)."""
        if not self.shared:
            self._waiting = await self.store.recipients()

    async def hold(self, request: Request, recipient: str, now: float) -> bool:
        """Store ``request`` for ``recipient``; False when their queue is full."""
        date = request.headers.get("Date") or email.utils.formatdate(now, usegmt=True)
        if self._waiting is not None:
            self._waiting.add(recipient)
        return await self.store.enqueue(
            recipient,
            sender=request.headers.get("From") or "",
            content_type=request.headers.get("Content-Type") or "text/plain",
            body=request.body,
            date_header=date,
            now=dt.datetime.fromtimestamp(now, dt.UTC),
        )

    def on_registered(self, aor: str, contact: Contact) -> None:
        """Location listener: a device of ``aor`` registered; deliver what is held."""
        if contact.flow is None:
            return
        if self._waiting is not None:
            if aor not in self._waiting:
                return
            self._waiting.discard(aor)
        task = asyncio.get_running_loop().create_task(self._deliver(aor, contact))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, aor: str, contact: Contact) -> None:
        try:
            messages = await self.store.take_for(aor)
        except StoreError as exc:
            log.warning("offline messages not read", aor=aor, reason=str(exc))
            return
        for index, message in enumerate(messages):
            status = await self._send(aor, contact, message)
            if not 200 <= status < 300:
                log.info("offline delivery failed; kept", aor=aor, status=status)
                await self._put_back(messages[index:])
                return
            log.info("offline message delivered", aor=aor, id=message.id)

    async def _send(self, aor: str, contact: Contact, message: StoredMessage) -> int:
        flow = self.device_flow(contact)
        if flow is None:
            return 503
        headers = Headers()
        headers.add("Via", self.via(flow, "z9hG4bK" + os.urandom(12).hex()))
        for hop in contact.path:  # RFC 3327 §5.3: the way the device registered
            headers.add("Route", hop)
        headers.add("Max-Forwards", "70")
        headers.add("From", message.sender)
        headers.add("To", f"<{aor}>")
        headers.add("Call-ID", os.urandom(12).hex())
        headers.add("CSeq", "1 MESSAGE")
        if message.date_header:
            headers.add("Date", message.date_header)
        headers.add("Content-Type", message.content_type)
        request = Request("MESSAGE", contact.uri, headers, message.body)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def answered(txn: ClientTransaction, response: Response) -> None:
            if response.status >= 200 and not future.done():
                future.set_result(response.status)

        def failed(txn: ClientTransaction, status: int) -> None:
            if not future.done():
                future.set_result(status)

        try:
            self.stack.send_request(request, flow, ClientCallbacks(answered, failed))
        except Exception as exc:
            log.warning("offline delivery not started", reason=str(exc))
            return 503
        try:
            # Timer F ends the transaction after 64*T1 = 32 s; this only
            # guards against an outcome that never comes.
            return await asyncio.wait_for(future, timeout=64.0)
        except TimeoutError:
            return 408

    async def _put_back(self, messages: list[StoredMessage]) -> None:
        if messages and self._waiting is not None:
            self._waiting.add(messages[0].recipient)
        for message in messages:
            try:
                await self.store.enqueue(
                    message.recipient,
                    sender=message.sender,
                    content_type=message.content_type,
                    body=message.body,
                    date_header=message.date_header,
                    now=message.received_at,
                )
            except StoreError as exc:
                log.error("offline message lost", aor=message.recipient, reason=str(exc))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class OfflineImFeature(Feature):
    """Store and forward as a feature: it takes over a MESSAGE whose recipient
    has no reachable device (the UNREACHABLE hook) and answers once the
    message is durably stored."""

    name = "im"

    def __init__(
        self, messages: OfflineMessages, max_age: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.messages = messages
        self.max_age = max_age
        self.clock = clock
        self.host: FeatureHost | None = None

    def register(self, host: FeatureHost) -> None:
        self.host = host
        host.registry.hook(UNREACHABLE, self.take_over)

    async def start(self) -> None:
        await self.messages.load()

    def jobs(self) -> list[Coroutine[object, object, None]]:
        return [self._purge_old()]

    async def _purge_old(self) -> None:
        """Drop held messages older than the configured age, every PURGE_INTERVAL."""
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.max_age)
            try:
                await self.messages.store.purge_older_than(cutoff)
            except Exception as exc:  # the next round retries
                log.warning("offline purge failed", reason=str(exc))

    async def close(self) -> None:
        await self.messages.close()

    def take_over(self, exchange: Exchange) -> bool:
        if exchange.method != "MESSAGE" or exchange.target is None or self.host is None:
            return False
        self.host.spawn(self._hold(exchange, exchange.target))
        return True

    async def _hold(self, exchange: Exchange, aor: str) -> None:
        stack = exchange.stack
        assert stack is not None
        try:
            stored = await self.messages.hold(exchange.request, aor, self.clock())
        except StoreError as exc:  # the back end is away (bounded by its timeouts)
            log.error("offline store unavailable", aor=aor, reason=str(exc))
            stack.respond(
                exchange.txn, 503, "Message store unavailable",
                headers=[("Retry-After", STORE_RETRY_AFTER)],
            )  # fmt: skip
            return
        except Exception as exc:
            log.error("offline store failed", aor=aor, reason=str(exc))
            stack.respond(exchange.txn, 500, "Message could not be stored")
            return
        if stored:
            log.info("message held for offline user", aor=aor)
            stack.respond(exchange.txn, 202, "Accepted (recipient offline; stored)")
        else:
            stack.respond(exchange.txn, 480, "Recipient offline and their message store is full")


def build(setup: Setup) -> Feature:
    """Always on: a MESSAGE to an offline user is stored, not lost."""
    c = setup.config
    store = OfflineMessageStore(
        setup.db, max_per_user=c.im.offline_max_per_user, max_age=c.im.offline_max_age
    )
    messages = OfflineMessages(
        store, setup.host.stack, setup.host.local.via, setup.host.device_flow,
        shared=setup.pool_member,  # the pool's other members store messages too
    )  # fmt: skip
    setup.location.add_listener(messages.on_registered)
    return OfflineImFeature(messages, c.im.offline_max_age)
