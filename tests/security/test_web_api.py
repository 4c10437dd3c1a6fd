"""Misusing the web API, over real HTTPS against a running server.

* A stranger: every route but sign-in answers 401 without a token, with a
  forged one, with a signed-out one; a failed sign-in looks the same for a
  name that exists and one that does not; a flood of wrong passwords bans the
  source (the SIP ban: 429 on HTTP).
* A user acting as an administrator: a user's token is refused by the admin
  listener, an administrator's by the web listener, and a user who is not an
  administrator cannot sign in to the admin listener.
* A forged cross-site change: with the session cookie alone (what a browser
  sends on its own), a change without the CSRF token, or from another origin,
  is refused; reading needs no token but is unreadable cross-origin.
* Malformed and oversized input: 4xx problem documents, never a 5xx.
* A property-based run (schemathesis, from the served OpenAPI document) with a
  valid token finds no 5xx on any route, and no route answers without one.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PASSWORDS
from tests.e2e.server import ConclaveServer
from tests.e2e.test_web_api import ADMIN, client, sign_in, urls

COOKIE_USER = "__Host-conclave"
COOKIE_ADMIN = "__Host-conclave-admin"
FUZZ = {
    **ADMIN,
    "limits": {"requests_per_second": 10_000, "burst": 10_000, "auth_failures_per_minute": 10_000},
}
"""The property-based run sends hundreds of requests: the per-source rate
limit (tested below) is raised so that it tests the routes, not the limit."""


def refused(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["status"] == status


def openapi(http: httpx.Client) -> dict[str, Any]:
    answer = http.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete"}
    ]


def concrete(path: str) -> str:
    return path.replace("{name}", "alice").replace("{address}", "bob").replace("{target}", "bob")


def test_no_route_answers_a_stranger(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=FUZZ)
    web, admin = urls(server)
    for base in (web, admin):
        with client(server, base) as http:
            document = openapi(http)
            ops = operations(document)
            assert len(ops) >= 8
            for method, path in ops:
                if path == "/session" and method == "POST":
                    continue
                for headers in ({}, {"Authorization": "Bearer forged-token-0123456789"}):
                    answer = http.request(method, concrete(path), headers=headers, json={})
                    refused(answer, 401)
                    assert answer.headers["www-authenticate"] == "Bearer"


def test_failed_sign_ins_look_the_same_and_a_flood_is_banned(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config={**ADMIN, "limits": {"auth_failures_per_minute": 5}})
    web, _admin = urls(server)
    with client(server, web) as http:
        wrong = http.post("/session", json={"user": "alice", "password": "not-the-password"})
        nobody = http.post("/session", json={"user": "nobody", "password": "not-the-password"})
        refused(wrong, 401)
        refused(nobody, 401)
        assert wrong.json() == nobody.json()
        for _ in range(10):
            try:
                answer = http.post("/session", json={"user": "alice", "password": "guess"})
            except httpx.TransportError:
                break  # banned: the listener closes a banned source's connections
            if answer.status_code == 429:
                break
        else:
            pytest.fail("ten wrong passwords in a row were never banned")
        server.wait_for(
            lambda e: (
                e.get("event") == "source banned" and e.get("reason") == "authentication failures"
            )
        )
    # Banned: even the right password is not looked at.
    with client(server, web) as http, pytest.raises(httpx.TransportError):
        http.post("/session", json={"user": "alice", "password": PASSWORDS["alice"]})


def test_tokens_stay_on_their_own_listener(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=ADMIN)
    web, admin = urls(server)
    with client(server, web) as user_http, client(server, admin) as admin_http:
        user = sign_in(user_http, "carol")  # an administrator, signed in as a user
        refused(
            admin_http.get("/admin/users", headers={"Authorization": f"Bearer {user['token']}"}),
            401,
        )
        refused(
            admin_http.post("/session", json={"user": "bob", "password": PASSWORDS["bob"]}), 403
        )
        boss = sign_in(admin_http, "carol")
        refused(user_http.get("/me", headers={"Authorization": f"Bearer {boss['token']}"}), 401)
        # Signed out: the token is dead at once.
        assert admin_http.delete("/session").status_code == 204
        refused(admin_http.get("/admin/users"), 401)


def test_cookie_changes_need_the_csrf_token_and_our_origin(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config=ADMIN)
    _web, admin = urls(server)
    trust = ssl.create_default_context(cafile=str(server.ca))
    with httpx.Client(base_url=admin, verify=trust, timeout=10.0) as http:
        answer = http.post("/session", json={"user": "carol", "password": PASSWORDS["carol"]})
        assert answer.status_code == 200
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_ADMIN}=")
        for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower(), cookie
        csrf = answer.json()["csrf"]
        # httpx keeps the cookie: what a browser would send by itself.
        assert http.get("/admin/users").status_code == 200  # reading needs no CSRF token
        refused(http.post("/admin/users/bob/disable"), 403)
        refused(http.post("/admin/users/bob/disable", headers={"X-CSRF-Token": "guess"}), 403)
        evil = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
        refused(http.post("/admin/users/bob/disable", headers=evil), 403)
        ours = http.post("/admin/users/bob/disable", headers={"X-CSRF-Token": csrf})
        assert ours.status_code == 200 and ours.json()["disabled"] is True
        # No CORS: nothing tells a browser another origin may read our answers.
        preflight = http.options(
            "/admin/users",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in preflight.headers


def test_malformed_and_oversized_input_is_a_4xx(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=ADMIN)
    web, admin = urls(server)
    with client(server, web) as http:
        refused(
            http.post(
                "/session", content=b"{not json", headers={"Content-Type": "application/json"}
            ),
            422,
        )
        refused(http.post("/session", json={"user": "alice"}), 422)
        refused(http.post("/session", json={"user": "a" * 65, "password": "x"}), 422)
        refused(http.post("/session", json={"user": "alice", "password": "x", "extra": 1}), 422)
        refused(
            http.post(
                "/session", content=b"x" * 1_100_000, headers={"Content-Type": "application/json"}
            ),
            413,
        )
        # What a cross-site form can send (text/plain) is no sign-in: JSON only.
        form = b'{"user": "alice", "password": "' + PASSWORDS["alice"].encode() + b'"}'
        refused(http.post("/session", content=form, headers={"Content-Type": "text/plain"}), 422)
        chunks = (part for part in (b'{"user": "alice", ', b'"password": "x"}'))
        refused(http.post("/session", content=chunks), 411)  # chunked: no length known
        sign_in(http, "alice")
        refused(http.put("/me/contacts/" + "b" * 400, json={"group": "x"}), 422)
        refused(http.put("/me/contacts/bob", json={"group": ""}), 422)
        refused(http.put("/me/privacy/bob", json={"level": "owner"}), 422)
        refused(http.put("/me/contacts/bob%00x", json={"group": "Team"}), 404)
        refused(http.get("/me/messages", params={"limit": 100_000}), 422)
        refused(http.get("/me/messages", params={"since": "yesterday"}), 422)
    with client(server, admin) as http:
        sign_in(http, "carol")
        refused(http.post("/admin/users", json={"name": "eve", "password": "short"}), 422)
        refused(http.post("/admin/users", json={"name": "bad name\n", "password": None}), 422)
        refused(http.get("/admin/calls", params={"kind": "everything"}), 422)


def test_property_based_run_finds_no_server_error(
    make_server: Callable[..., ConclaveServer],
) -> None:
    """schemathesis generates requests from each listener's OpenAPI document."""
    import schemathesis

    server = make_server(config=FUZZ)
    web, admin = urls(server)
    for base, user in ((web, "alice"), (admin, "carol")):
        with client(server, base) as http:
            token = sign_in(http, user)["token"]
            document = openapi(http)
        schema = schemathesis.openapi.from_dict(document)
        trust = ssl.create_default_context(cafile=str(server.ca))
        with httpx.Client(verify=trust, timeout=10.0) as session:
            for result in schema.get_all_operations():
                operation = result.ok()
                if operation.method.upper() == "DELETE" and operation.path == "/session":
                    continue  # would sign the run out; tested above
                fuzz(session, base, token, operation)
    server.wait_for(lambda e: e.get("event") == "api signed in")
    assert not server.events("request handling failed")
    assert not server.events("unhandled error")


def fuzz(session: httpx.Client, base: str, token: str, operation: Any) -> None:
    """Send what schemathesis generates for ``operation`` with ``token``: no 5xx."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis.core import NotSet

    @settings(
        max_examples=15, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        url = base + case.formatted_path
        headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        kwargs: dict[str, Any] = {"params": case.query, "headers": headers}
        if not isinstance(case.body, NotSet):
            kwargs["json"] = case.body
        answer = session.request(case.method, url, **kwargs)
        assert answer.status_code < 500, (case.method, url, kwargs, answer.text)
        if answer.status_code >= 400:
            assert answer.headers["content-type"] == "application/problem+json"

    run()
