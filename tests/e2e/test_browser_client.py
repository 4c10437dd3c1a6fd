"""The browser client in real browsers: two headless Debian ``chromium`` instances
driven by Playwright (pointed at /usr/bin/chromium; no browser is downloaded).

Alice and Bob open the page the web listener serves, sign in over SIP
WebSocket, Alice watches Bob's presence change as Bob sets his state, and they
exchange messages both ways.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from .conftest import PASSWORDS
from .server import ConclaveServer
from .test_sip_websocket import WEB, web_port_and_origin

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 15_000


def chromium() -> str:
    """The browser; missing (or Playwright missing): a failure under CI=true, a skip otherwise."""
    problem = None
    if shutil.which(CHROMIUM) is None:
        problem = "Debian chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {problem}")
        pytest.skip(problem)
    return CHROMIUM


@pytest.fixture
def browsers() -> Iterator[list[object]]:
    from playwright.sync_api import sync_playwright

    path = chromium()
    with sync_playwright() as p:
        launched = [
            p.chromium.launch(
                executable_path=path,
                args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
            )
            for _ in range(2)
        ]
        try:
            yield launched
        finally:
            for browser in launched:
                browser.close()


def sign_in(browser: object, url: str, user: str) -> object:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    page = browser.new_page(ignore_https_errors=True)  # the deployment's own CA
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    page.get_by_label("User name", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[user])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#me")).to_have_text(f"Signed in as {user}@localhost", timeout=WAIT_MS)
    return page


def test_two_browsers_see_presence_and_exchange_messages(
    make_server: Callable[..., ConclaveServer], browsers: list[object]
) -> None:
    from playwright.sync_api import expect

    server = make_server(config=WEB)
    port, _origin = web_port_and_origin(server)
    url = f"https://127.0.0.1:{port}/"
    alice = sign_in(browsers[0], url, "alice")
    bob = sign_in(browsers[1], url, "bob")

    alice.get_by_label("Add a contact (user name)").fill("bob")  # type: ignore[attr-defined]
    alice.get_by_role("button", name="Add", exact=True).click()  # type: ignore[attr-defined]
    state = alice.locator('li[data-contact="sip:bob@localhost"] .state')  # type: ignore[attr-defined]
    expect(state).to_have_text("Available", timeout=WAIT_MS)
    bob.get_by_label("My state").select_option("busy")  # type: ignore[attr-defined]
    expect(state).to_have_text("Busy", timeout=WAIT_MS)

    alice.get_by_label("To", exact=True).fill("bob")  # type: ignore[attr-defined]
    alice.get_by_label("Message", exact=True).fill("hello from Alice's browser")  # type: ignore[attr-defined]
    alice.get_by_role("button", name="Send", exact=True).click()  # type: ignore[attr-defined]
    expect(bob.locator("#messages")).to_contain_text(  # type: ignore[attr-defined]
        "alice@localhost: hello from Alice's browser", timeout=WAIT_MS
    )
    bob.get_by_label("To", exact=True).fill("alice")  # type: ignore[attr-defined]
    bob.get_by_label("Message", exact=True).fill("hello back")  # type: ignore[attr-defined]
    bob.get_by_role("button", name="Send", exact=True).click()  # type: ignore[attr-defined]
    expect(alice.locator("#messages")).to_contain_text(  # type: ignore[attr-defined]
        "bob@localhost: hello back", timeout=WAIT_MS
    )


def test_a_browser_user_and_a_baresip_user(
    make_server: Callable[..., ConclaveServer], browsers: list[object]
) -> None:
    """Mixed: the page in chromium and baresip over TLS see each other's presence
    and exchange messages both ways."""
    from playwright.sync_api import expect

    from .peers import Baresip

    server = make_server(config={**WEB, "presence": {"notify_merge_window": "0ms"},
                                 "auth": {"algorithms": ["MD5"]}})  # fmt: skip
    port, _origin = web_port_and_origin(server)
    alice_uri, bob_uri = "sip:alice@localhost", "sip:bob@localhost"
    with Baresip(
        bob_uri, password=PASSWORDS["bob"], outbound=f"sip:127.0.0.1:{server.ports['tls']}",
        transport="tls", ca_file=server.ca, publish=True,
        presence_contacts=[alice_uri], name="bob",
    ) as bob:  # fmt: skip
        bob.wait_registered()
        alice = sign_in(browsers[0], f"https://127.0.0.1:{port}/", "alice")
        # Each sees the other: the page watches baresip's PUBLISH, baresip the page's.
        alice.get_by_label("Add a contact (user name)").fill("bob")  # type: ignore[attr-defined]
        alice.get_by_role("button", name="Add", exact=True).click()  # type: ignore[attr-defined]
        state = alice.locator(f'li[data-contact="{bob_uri}"] .state')  # type: ignore[attr-defined]
        expect(state).to_have_text("Available", timeout=WAIT_MS)
        bob.wait_presence(alice_uri, "online", timeout=20)

        alice.get_by_label("To", exact=True).fill("bob")  # type: ignore[attr-defined]
        alice.get_by_label("Message", exact=True).fill("hello baresip")  # type: ignore[attr-defined]
        alice.get_by_role("button", name="Send", exact=True).click()  # type: ignore[attr-defined]
        assert bob.wait_message(timeout=15) == "hello baresip"
        bob.send_message(alice_uri, "hello browser")
        expect(alice.locator("#messages")).to_contain_text(  # type: ignore[attr-defined]
            "bob@localhost: hello browser", timeout=WAIT_MS
        )


def test_messages_sent_while_offline_arrive_at_sign_in(
    make_server: Callable[..., ConclaveServer], browsers: list[object]
) -> None:
    from playwright.sync_api import expect

    from .test_im import send_im, signed_in

    server = make_server(config=WEB)
    port, _origin = web_port_and_origin(server)
    bob = signed_in(server, "bob")
    send_im(bob, "bob", "alice", b"while you were out")
    assert bob.final().status == 202  # stored for alice
    alice = sign_in(browsers[0], f"https://127.0.0.1:{port}/", "alice")
    expect(alice.locator("#messages")).to_contain_text(  # type: ignore[attr-defined]
        "bob@localhost: while you were out", timeout=WAIT_MS
    )
