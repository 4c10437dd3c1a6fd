"""The admin console in a real browser (headless Debian chromium via Playwright).

An administrator signs in on the admin listener, sees health, certificates and
the audit findings, disables a user (the change is logged with the
administrator's name, and the user can no longer sign in over SIP); a user who
is not an administrator is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import SipClient, digest_header
from .test_browser_client import WAIT_MS, chromium
from .test_web_api import ADMIN


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    path = chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path)
        try:
            yield launched
        finally:
            launched.close()


def console_url(server: ConclaveServer) -> str:
    event = server.wait_for(lambda e: e.get("event") == "admin listening")
    assert event["scheme"] == "https"
    return f"https://127.0.0.1:{event['port']}/console"


def open_console(browser: object, url: str, user: str) -> object:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    page = browser.new_page(ignore_https_errors=True)  # the deployment's own CA
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    page.get_by_label("User name", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[user])
    page.get_by_role("button", name="Sign in").click()
    return page


def sip_register(server: ConclaveServer, user: str) -> int:
    client = SipClient("tls", server.ports["tls"], ca=str(server.ca))
    try:
        to, uri = f"sip:{user}@localhost", "sip:localhost"
        first = client.send("REGISTER", uri, from_user=user, to=to, headers=["Expires: 60"])
        if first.status != 401:
            return first.status
        auth = digest_header(first, user=user, password=PASSWORDS[user], method="REGISTER", uri=uri)
        return client.send(
            "REGISTER", uri, from_user=user, to=to, headers=["Expires: 60", auth]
        ).status
    finally:
        client.close()


def test_an_administrator_disables_a_user_from_the_console(
    make_server: Callable[..., ConclaveServer], browser: object
) -> None:
    from playwright.sync_api import expect

    server = make_server(config=ADMIN)
    page = open_console(browser, console_url(server), "carol")
    expect(page.locator("#me")).to_have_text("Signed in as carol", timeout=WAIT_MS)  # type: ignore[attr-defined]
    # What the console shows: health, certificates, audit findings, users.
    expect(page.locator("#load")).to_contain_text("ready", timeout=WAIT_MS)  # type: ignore[attr-defined]
    expect(page.locator("#health")).to_contain_text("listeners")  # type: ignore[attr-defined]
    expect(page.locator("#certificates")).to_contain_text("server")  # type: ignore[attr-defined]
    findings = page.locator("#findings li")  # type: ignore[attr-defined]
    expect(findings.first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#topology-text")).to_contain_text("Standard Edition")  # type: ignore[attr-defined]

    assert sip_register(server, "bob") == 200
    row = page.locator('tr[data-user="bob"]')  # type: ignore[attr-defined]
    expect(row.locator(".user-state")).to_have_text("enabled", timeout=WAIT_MS)
    row.get_by_role("button", name="Disable bob").click()
    expect(page.locator("#status")).to_have_text("bob disabled", timeout=WAIT_MS)  # type: ignore[attr-defined]
    expect(row.locator(".user-state")).to_have_text("disabled", timeout=WAIT_MS)
    server.wait_for(
        lambda e: (
            e.get("event") == "admin change"
            and e.get("admin") == "carol"
            and e.get("action") == "user disabled"
            and e.get("user") == "bob"
        )
    )
    assert sip_register(server, "bob") == 401  # a disabled user no longer signs in
    expect(findings.first).to_be_visible()  # the finding list is still shown after the change


def test_a_user_who_is_not_an_administrator_is_refused(
    make_server: Callable[..., ConclaveServer], browser: object
) -> None:
    from playwright.sync_api import expect

    server = make_server(config=ADMIN)
    page = open_console(browser, console_url(server), "alice")
    expect(page.locator("#signin-status")).to_have_text(  # type: ignore[attr-defined]
        "alice is not an administrator", timeout=WAIT_MS
    )
    expect(page.locator("#console")).to_be_hidden()  # type: ignore[attr-defined]
