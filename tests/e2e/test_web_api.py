"""The web API over real HTTPS: the user API on the web listener and the admin
API on the admin listener, against a running server.

A user signs in with their SIP password and reads and changes their own
contacts and privacy rules; an administrator adds, disables and re-enables a
user and resets a password, each change logged with the administrator's name,
and the disabled user can no longer sign in (SIP or API).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import httpx

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import digest_header
from .test_sip_websocket import WEB

ADMIN = {
    **WEB,
    "admin": {"enabled": True, "bind": "127.0.0.1:0", "console": True, "admins": ["carol"]},
    "archive": {"enabled": True},
}


def urls(server: ConclaveServer) -> tuple[str, str]:
    web = server.wait_for(lambda e: e.get("event") == "web listening")
    admin = server.wait_for(lambda e: e.get("event") == "admin listening")
    return f"https://127.0.0.1:{web['port']}/api/v1", f"https://127.0.0.1:{admin['port']}/api/v1"


def client(server: ConclaveServer, base: str) -> httpx.Client:
    trust = ssl.create_default_context(cafile=str(server.ca))
    return httpx.Client(base_url=base, verify=trust, timeout=10.0)


def sign_in(http: httpx.Client, user: str, password: str | None = None) -> dict[str, Any]:
    answer = http.post("/session", json={"user": user, "password": password or PASSWORDS[user]})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    http.headers["Authorization"] = f"Bearer {body['token']}"
    return body


def test_a_user_manages_their_own_contacts_and_privacy(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config=ADMIN)
    web, _admin = urls(server)
    with client(server, web) as http:
        session = sign_in(http, "alice")
        assert session["user"] == "alice" and session["admin"] is False
        assert 0 < session["expires_in"] <= 900
        me = http.get("/me").json()
        assert me == {"user": "alice", "address": "sip:alice@localhost", "admin": False}
        put = http.put("/me/contacts/bob", json={"group": "Team"})
        assert put.status_code == 200, put.text
        assert put.json() == {"address": "sip:bob@localhost", "group": "Team"}
        assert http.get("/me/contacts").json() == [put.json()]
        nobody = http.put("/me/contacts/nobody", json={"group": "Team"})
        assert nobody.status_code == 404
        assert nobody.headers["content-type"] == "application/problem+json"
        rule = http.put("/me/privacy/sip:bob@localhost", json={"level": "friends"})
        assert rule.status_code == 200, rule.text
        assert http.get("/me/privacy").json() == [rule.json()]
        assert rule.json() == {"target": "sip:bob@localhost", "level": "friends"}
        assert http.delete("/me/privacy/sip:bob@localhost").status_code == 204
        assert http.delete("/me/contacts/bob").status_code == 204  # our domain by default
        assert http.get("/me/contacts").json() == []
        assert http.get("/me/messages").json() == []
        assert http.get("/me/relay").status_code == 404  # no media relay here
        assert http.delete("/session").status_code == 204
        assert http.get("/me").status_code == 401


def test_an_administrator_manages_users(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=ADMIN)
    web, admin = urls(server)
    with client(server, admin) as http, client(server, web) as user_http:
        refused = http.post("/session", json={"user": "alice", "password": PASSWORDS["alice"]})
        assert refused.status_code == 403  # alice is no administrator
        sign_in(http, "carol")
        names = {u["name"]: u for u in http.get("/admin/users").json()}
        assert set(PASSWORDS) <= set(names) and names["carol"]["admin"] is True
        added = http.post("/admin/users", json={"name": "dave"})
        assert added.status_code == 201, added.text
        password = added.json()["password"]
        assert password
        sign_in(user_http, "dave", password)
        assert user_http.get("/me").status_code == 200
        disabled = http.post("/admin/users/dave/disable")
        assert disabled.status_code == 200 and disabled.json()["disabled"] is True
        server.wait_for(
            lambda e: (
                e.get("event") == "admin change"
                and e.get("admin") == "carol"
                and e.get("action") == "user disabled"
                and e.get("user") == "dave"
            )
        )
        assert user_http.get("/me").status_code == 401  # the disabled user's session ended
        again = user_http.post("/session", json={"user": "dave", "password": password})
        assert again.status_code == 401
        assert http.post("/admin/users/dave/enable").json()["disabled"] is False
        reset = http.post("/admin/users/dave/password", json={})
        assert reset.status_code == 200 and reset.json()["password"] != password
        assert http.get("/admin/users/nobody/disable").status_code == 405
        assert http.post("/admin/users/nobody/disable").status_code == 404
        assert http.post("/admin/users/Carol/disable").status_code == 409  # not oneself
        assert http.post("/admin/users", json={"name": "alice"}).status_code == 409
        health = http.get("/admin/health").json()
        assert health["ready"] is True and health["role"] == "standard"
        certs = http.get("/admin/certificates").json()
        assert any(c["role"] == "server" for c in certs)
        findings = http.get("/admin/audit")
        assert findings.status_code == 200 and isinstance(findings.json(), list)
        assert http.get("/admin/topology").json() == {"kind": "standard", "document": None}
        assert http.get("/admin/calls").status_code == 200
        export = http.get("/admin/archive/export")
        assert export.status_code == 200
        assert export.headers["content-type"].startswith("application/x-ndjson")


def test_a_locked_out_user_is_seen_and_unlocked_by_an_administrator(
    make_server: Callable[..., ConclaveServer],
) -> None:
    config = {**ADMIN, "lockout": {"threshold": 3}}
    server = make_server(config=config)
    web, admin = urls(server)
    with client(server, web) as user_http, client(server, admin) as http:
        for _ in range(3):
            wrong = user_http.post("/session", json={"user": "bob", "password": "not-it-at-all"})
            assert wrong.status_code == 401
        server.wait_for(lambda e: e.get("event") == "account locked" and e.get("user") == "bob")
        locked = user_http.post("/session", json={"user": "bob", "password": PASSWORDS["bob"]})
        assert locked.status_code == 401  # the right password, but locked: the same answer
        sign_in(http, "carol")
        rows = {row["user"]: row for row in http.get("/admin/lockouts").json()}
        assert rows["bob"]["locked_until"]
        assert http.delete("/admin/lockouts/bob").status_code == 204
        assert http.get("/admin/lockouts").json() == [] or not any(
            r["locked_until"] for r in http.get("/admin/lockouts").json()
        )
        sign_in(user_http, "bob")


def test_the_api_answers_what_the_sip_side_sees(make_server: Callable[..., ConclaveServer]) -> None:
    """A password set through the admin API is the SIP password at once."""
    from .sipclient import SipClient

    server = make_server(config=ADMIN)
    _web, admin = urls(server)
    with client(server, admin) as http:
        sign_in(http, "carol")
        http.post("/admin/users/bob/password", json={"password": "Fresh-Password-4242"})
    sip = SipClient("tls", server.ports["tls"], ca=str(server.ca))
    try:
        to, uri = "sip:bob@localhost", "sip:localhost"
        first = sip.send("REGISTER", uri, from_user="bob", to=to, headers=["Expires: 60"])
        fresh = "Fresh-Password-4242"
        auth = digest_header(first, user="bob", password=fresh, method="REGISTER", uri=uri)
        final = sip.send("REGISTER", uri, from_user="bob", to=to, headers=["Expires: 60", auth])
        assert final.status == 200, final
    finally:
        sip.close()


def test_an_administrator_plans_and_checks_a_topology(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config=ADMIN)
    _web, admin = urls(server)
    with client(server, admin) as http:
        sign_in(http, "carol")
        planned = http.post("/admin/topology/plan", json={"domain": "example.test", "users": 500})
        assert planned.status_code == 200, planned.text
        proposal = planned.json()
        assert "[pools." in proposal["toml"] and proposal["sizing"]
        checked = http.post("/admin/topology/check", json={"toml": proposal["toml"]})
        assert checked.status_code == 200 and checked.json()["valid"] is True
        broken = proposal["toml"].replace('edition = "standard"', 'edition = "premium"', 1)
        result = http.post("/admin/topology/check", json={"toml": broken}).json()
        assert result["valid"] is False
        assert any("edition" in p["path"] for p in result["problems"])
        bad = http.post("/admin/topology/plan", json={"domain": "example.test", "users": 0})
        assert bad.status_code == 422


def test_a_note_set_through_the_api_reaches_watchers(
    make_server: Callable[..., ConclaveServer],
) -> None:
    """Bob publishes from a SIP client; his note set through the API reaches Alice's
    subscription, a newer note from his device wins, and removing it leaves his."""
    from .test_presence import FAST, Peer, Subscription, pidf

    server = make_server(config={**ADMIN, **FAST})
    web, _admin = urls(server)
    bob, alice = Peer(server, "bob"), Peer(server, "alice")
    try:
        etag = bob.publish(pidf("bob"))
        Subscription(alice, "sip:bob@localhost")
        assert b"<basic>open</basic>" in alice.notify().body
        with client(server, web) as http:
            sign_in(http, "bob")
            # Colleagues see no notes: Bob lets Alice see them (workgroup).
            assert http.put("/me/privacy/alice@localhost", json={"level": "workgroup"}).is_success
            assert http.get("/me/presence").json() == {"availability": "available", "note": None}
            noted = http.put("/me/presence/note", json={"note": "in the lab until 3"})
            assert noted.json() == {"availability": "available", "note": "in the lab until 3"}
            notified(alice, b"in the lab until 3")
            bob.publish(pidf("bob", note="back at my desk"), etag=etag)  # newer: it wins
            notified(alice, b"back at my desk")
            assert http.get("/me/presence").json()["note"] == "back at my desk"
            assert http.delete("/me/presence/note").json()["note"] == "back at my desk"
            too_long = http.put("/me/presence/note", json={"note": "x" * 501})
            assert too_long.status_code == 422
    finally:
        bob.close()
        alice.close()


def notified(watcher: Any, text: bytes, most: int = 5) -> None:
    """Read the watcher's NOTIFYs until one carries ``text`` (each read is bounded)."""
    for _ in range(most):
        if text in watcher.notify().body:
            return
    raise AssertionError(f"no NOTIFY with {text!r} in {most}")


def test_history_and_export_come_from_the_archive(
    make_server: Callable[..., ConclaveServer],
) -> None:
    """A message Alice sends (held for offline Bob) is in both users' history and in
    the administrator's streamed export; another user's history does not show it."""
    import json

    from .test_im import send_im, signed_in

    server = make_server(config=ADMIN)
    web, admin = urls(server)
    alice = signed_in(server, "alice")
    try:
        send_im(alice, "alice", "bob", b"minutes attached")
        assert alice.final().status == 202  # bob is offline: archived, then held
    finally:
        alice.close()
    with client(server, web) as http:
        for user in ("alice", "bob"):
            sign_in(http, user)
            history = http.get("/me/messages").json()
            assert [(m["sender"], m["body"]) for m in history] == [
                ("sip:alice@localhost", "minutes attached")
            ], user
        sign_in(http, "carol")
        assert http.get("/me/messages").json() == []
    with client(server, admin) as http:
        sign_in(http, "carol")
        with http.stream("GET", "/admin/archive/export", params={"user": "bob"}) as export:
            assert export.status_code == 200
            lines = [json.loads(line) for line in export.iter_lines() if line]
        assert [r["body"] for r in lines] == ["minutes attached"]
        server.wait_for(
            lambda e: e.get("event") == "archive exported" and e.get("admin") == "carol"
        )


def test_a_user_disabled_from_the_command_line_loses_their_token(
    make_server: Callable[..., ConclaveServer],
) -> None:
    from .server import conclave

    server = make_server(config=ADMIN)
    web, _admin = urls(server)
    with client(server, web) as http:
        sign_in(http, "bob")
        assert http.get("/me").status_code == 200
        seen = {id(e) for e in server.lines}
        conclave("user", "disable", "bob", "--dir", str(server.data_dir))
        server.wait_for(lambda e: e.get("event") == "users reloaded" and id(e) not in seen)
        assert http.get("/me").status_code == 401
