"""Presence over real sockets: PUBLISH, SUBSCRIBE/NOTIFY, contact lists, Blocked vs Offline.

Every client speaks SIP over TLS to a real ``conclave serve``. NOTIFYs are
sent with a merge window of 0 so that a NOTIFY caused by a PUBLISH is
written before the PUBLISH's 200; a later request on the watcher's
connection therefore proves by ordering, not by waiting, that no NOTIFY
was sent in between.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from conclave.services.presence.rlmi import split_multipart
from conclave.sip.address import parse_name_addr
from conclave.sip.fields import parse_subscription_state
from conclave.sip.message import Request, Response
from conclave.store.contacts import ContactStore
from conclave.store.database import Database
from conclave.store.users import UserStore

from .conftest import PASSWORDS
from .server import ConclaveServer, conclave
from .sipclient import SipClient, digest_header

DOMAIN = "localhost"
FAST = {"presence": {"min_expires": 1, "notify_merge_window": "0ms"}}


def pidf(
    user: str, *, note: str | None = None, activity: str | None = None, domain: str = DOMAIN
) -> bytes:
    person = ""
    if note or activity:
        acts = f"<rpid:activities><rpid:{activity}/></rpid:activities>" if activity else ""
        person = (
            f'<dm:person id="p">{acts}{f"<dm:note>{note}</dm:note>" if note else ""}</dm:person>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
        ' xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"'
        f' entity="sip:{user}@{domain}"><tuple id="t"><status><basic>open</basic></status>'
        f"</tuple>{person}</presence>"
    ).encode()


class Peer:
    """One user's TLS connection: sends requests (answering 407), answers NOTIFYs 200."""

    def __init__(self, server: ConclaveServer, user: str, password: str | None = None) -> None:
        self.client = SipClient("tls", server.ports["tls"], ca=str(server.ca))
        self.user = user
        self.password = password or PASSWORDS[user]
        self.domain = DOMAIN
        self.notifies: list[Request] = []
        self.responses: list[Response] = []
        self._cseq = itertools.count(1)

    def close(self) -> None:
        self.client.close()

    def _pump(self, timeout: float) -> None:
        msg = self.client.recv_message(timeout)
        if isinstance(msg, Request):
            self.client.reply(msg, 200)
            self.notifies.append(msg)
        elif msg.status >= 200:
            self.responses.append(msg)

    def response(self, timeout: float = 10.0) -> Response:
        while not self.responses:
            self._pump(timeout)
        return self.responses.pop(0)

    def notify(self, timeout: float = 10.0) -> Request:
        while not self.notifies:
            self._pump(timeout)
        return self.notifies.pop(0)

    def _build(
        self,
        method: str,
        uri: str,
        *,
        to: str,
        call_id: str,
        from_tag: str,
        headers: Iterable[str],
        body: bytes,
    ) -> bytes:
        port = self.client.local_port
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bK{os.urandom(8).hex()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {next(self._cseq)} {method}",
            f"Contact: <sip:{self.user}@127.0.0.1:{port};transport=tls>",
            *headers,
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def transact(
        self,
        method: str,
        uri: str,
        *,
        to: str | None = None,
        call_id: str | None = None,
        from_tag: str = "",
        headers: Iterable[str] = (),
        body: bytes = b"",
    ) -> Response:
        args: dict[str, Any] = {
            "to": to or f"<{uri}>",
            "call_id": call_id or os.urandom(8).hex(),
            "from_tag": from_tag or os.urandom(4).hex(),
            "body": body,
        }
        headers = list(headers)
        self.client.send_raw(self._build(method, uri, headers=headers, **args))
        resp = self.response()
        if resp.status == 407:
            auth = digest_header(
                resp, user=self.user, password=self.password, method=method, uri=uri
            )
            self.client.send_raw(self._build(method, uri, headers=[*headers, auth], **args))
            resp = self.response()
        return resp

    def publish(self, body: bytes | None, *, etag: str | None = None, expires: int = 600) -> str:
        headers = ["Event: presence", f"Expires: {expires}"]
        if etag:
            headers.append(f"SIP-If-Match: {etag}")
        if body:
            headers.append("Content-Type: application/pidf+xml")
        resp = self.transact(
            "PUBLISH", f"sip:{self.user}@{self.domain}", headers=headers, body=body or b""
        )
        assert resp.status == 200, resp
        return resp.headers.get("SIP-ETag") or ""


class Subscription:
    """The subscriber's side of one dialog."""

    def __init__(self, peer: Peer, target: str, *, expires: int = 600, extra: Iterable[str] = ()):
        self.peer = peer
        self.target = target
        self.call_id = os.urandom(8).hex()
        self.from_tag = os.urandom(4).hex()
        self.extra = list(extra)
        resp = peer.transact(
            "SUBSCRIBE",
            target,
            call_id=self.call_id,
            from_tag=self.from_tag,
            headers=["Event: presence", f"Expires: {expires}", *self.extra],
        )
        assert resp.status == 200, resp
        self.response = resp
        self.to_tag = parse_name_addr(resp.headers.get("To") or "").tag
        self.remote = str(parse_name_addr(resp.headers.get("Contact") or "").uri)

    def refresh(self, expires: int) -> Response:
        return self.peer.transact(
            "SUBSCRIBE",
            self.remote,
            to=f"<{self.target}>;tag={self.to_tag}",
            call_id=self.call_id,
            from_tag=self.from_tag,
            headers=["Event: presence", f"Expires: {expires}", *self.extra],
        )


def state_of(notify: Request) -> tuple[str, str | None]:
    value = parse_subscription_state(notify.headers.get("Subscription-State") or "")
    return value.state, value.reason


def test_publish_subscribe_refresh_unsubscribe(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=FAST)
    bob, alice = Peer(server, "bob"), Peer(server, "alice")
    etag = bob.publish(pidf("bob", note="at my desk"))
    sub = Subscription(alice, f"sip:bob@{DOMAIN}")
    assert sub.response.headers.get("Expires") == "600"
    first = alice.notify()
    assert state_of(first) == ("active", None)
    assert first.headers.get("Content-Type") == "application/pidf+xml"
    assert b"<basic>open</basic>" in first.body
    bob.publish(pidf("bob", activity="busy"), etag=etag)
    assert b"<rpid:busy/>" in alice.notify().body
    assert sub.refresh(300).status == 200
    assert state_of(alice.notify()) == ("active", None)
    assert sub.refresh(0).status == 200
    assert state_of(alice.notify()) == ("terminated", "timeout")
    assert sub.refresh(300).status == 481


def test_subscription_expires(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=FAST)
    alice = Peer(server, "alice")
    Subscription(alice, f"sip:bob@{DOMAIN}", expires=2)
    assert state_of(alice.notify()) == ("active", None)
    assert state_of(alice.notify(timeout=15)) == ("terminated", "timeout")


def test_bad_pidf_is_400_and_other_events_489(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=FAST)
    bob = Peer(server, "bob")
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><presence>&a;</presence>'
    resp = bob.transact(
        "PUBLISH",
        f"sip:bob@{DOMAIN}",
        headers=["Event: presence", "Content-Type: application/pidf+xml"],
        body=bomb,
    )
    assert resp.status == 400 and resp.reason.startswith("Bad PIDF")
    resp = bob.transact("SUBSCRIBE", f"sip:alice@{DOMAIN}", headers=["Event: dialog"])
    assert resp.status == 489
    assert "presence" in (resp.headers.get("Allow-Events") or "")


def _comparable(notify: Request) -> tuple[Any, ...]:
    return (
        notify.headers.get("Event"),
        notify.headers.get("Subscription-State"),
        notify.headers.get("Content-Type"),
        notify.body,
    )


def _blocked_or_offline_script(
    server: ConclaveServer, *, bob_online: bool
) -> list[tuple[Any, ...]]:
    alice, bob, carol = Peer(server, "alice"), Peer(server, "bob"), Peer(server, "carol")
    sub = Subscription(alice, f"sip:bob@{DOMAIN}", expires=60)
    seen = [alice.notify()]
    if bob_online:
        Subscription(carol, f"sip:bob@{DOMAIN}", expires=60)
        carol.notify()
        etag = bob.publish(pidf("bob", note="hello"))
        assert b"<basic>open</basic>" in carol.notify().body  # the control sees it
        bob.publish(pidf("bob", activity="away"), etag=etag)
        assert b"<rpid:away/>" in carol.notify().body
    # A NOTIFY caused by bob would already be on alice's connection, ahead of these.
    assert sub.refresh(60).status == 200
    seen.append(alice.notify())
    assert sub.refresh(0).status == 200
    seen.append(alice.notify())
    assert alice.notifies == []
    return [_comparable(n) for n in seen]


def test_blocked_is_indistinguishable_from_offline(
    tmp_path: Path, make_server: Callable[..., ConclaveServer]
) -> None:
    blocking = ConclaveServer(tmp_path / "blocking", users=dict(PASSWORDS), config=FAST).init()
    conclave(
        "privacy", "set", "bob", f"sip:alice@{DOMAIN}", "blocked", "--dir", str(blocking.data_dir)
    )
    blocking.start()
    try:
        blocked_view = _blocked_or_offline_script(blocking, bob_online=True)
    finally:
        blocking.stop()
    offline_view = _blocked_or_offline_script(make_server(config=FAST), bob_online=False)
    assert blocked_view == offline_view
    assert [s for _, s, _, _ in blocked_view][-1] == "terminated;reason=timeout"


def _add_users_and_contacts(data_dir: Path, owner: str, users: list[str]) -> None:
    async def work() -> None:
        db = Database(f"sqlite:///{data_dir / 'conclave.db'}")
        try:
            for name in users:
                await UserStore(db).add(name, DOMAIN, "Password-1234567")
            contacts = ContactStore(db)
            for name in users:
                await contacts.add(f"sip:{owner}@{DOMAIN}", f"sip:{name}@{DOMAIN}", "Team")
        finally:
            await db.dispose()

    asyncio.run(work())


def test_contact_list_of_fifty_over_one_eventlist_subscription(tmp_path: Path) -> None:
    users = [f"user{i:02d}" for i in range(50)]
    server = ConclaveServer(tmp_path / "data", users={"alice": PASSWORDS["alice"]}, config=FAST)
    server.init()
    _add_users_and_contacts(server.data_dir, "alice", users[1:])
    # One user and contact through the real command line, as an administrator would.
    conclave("user", "add", users[0], "--dir", str(server.data_dir), "--password-stdin",
             stdin="Password-1234567\n")  # fmt: skip
    conclave("contacts", "add", "alice", users[0], "--dir", str(server.data_dir))
    server.start()
    try:
        publishers = [Peer(server, name, "Password-1234567") for name in users[:5]]
        etags = [peer.publish(pidf(peer.user)) for peer in publishers]
        alice = Peer(server, "alice")
        accept = "Accept: multipart/related, application/rlmi+xml, application/pidf+xml"
        sub = Subscription(
            alice, f"sip:alice+contacts@{DOMAIN}", extra=["Supported: eventlist", accept]
        )
        assert sub.response.headers.get("Require") == "eventlist"
        full = alice.notify()
        content_type = full.headers.get("Content-Type") or ""
        parts = split_multipart(content_type, full.body)
        rlmi = parts[0].body.decode()
        assert 'fullState="true"' in rlmi
        listed = set(re.findall(r'<resource uri="sip:([^@"]+)@', rlmi))
        assert listed == set(users)
        assert len(parts) == 51
        assert sum(b"<basic>open</basic>" in p.body for p in parts[1:]) == 5
        # A change later arrives as partial state naming just that contact.
        publishers[0].publish(pidf(users[0], activity="busy"), etag=etags[0])
        partial = alice.notify()
        rlmi = split_multipart(partial.headers.get("Content-Type") or "", partial.body)[0].body
        assert b'fullState="false"' in rlmi
        assert re.findall(rb'<resource uri="([^"]+)"', rlmi) == [
            f"sip:{users[0]}@{DOMAIN}".encode()
        ]
    finally:
        server.stop()


def test_presence_disabled_registers_nothing(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config={"presence": {"enabled": False}})
    alice = Peer(server, "alice")
    options = alice.transact("OPTIONS", f"sip:{DOMAIN}")
    assert options.status == 200
    assert "SUBSCRIBE" not in (options.headers.get("Allow") or "")
    assert "Allow-Events" not in options.headers
    resp = alice.transact("SUBSCRIBE", f"sip:bob@{DOMAIN}", headers=["Event: presence"])
    assert resp.status == 405
