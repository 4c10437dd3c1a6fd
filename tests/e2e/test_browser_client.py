"""The browser client in real browsers: two headless Debian ``chromium`` instances
driven by Playwright (pointed at /usr/bin/chromium; no browser is downloaded).

Alice and Bob open the page the web listener serves, sign in over SIP
WebSocket, Alice watches Bob's presence change as Bob sets his state, and they
exchange messages both ways; Alice calls Bob and audio flows both ways over
WebRTC (the browsers' fake microphones), until she hangs up.
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
                args=[
                    "--use-fake-ui-for-media-stream",  # the microphone is granted unasked
                    "--use-fake-device-for-media-stream",  # a synthetic microphone
                    "--autoplay-policy=no-user-gesture-required",  # remote audio plays
                ],
            )
            for _ in range(2)
        ]
        try:
            yield launched
        finally:
            for browser in launched:
                browser.close()


def sign_in(
    browser: object, url: str, user: str, routes: dict[str, Callable[..., None]] | None = None
) -> object:
    """A page of ``browser`` signed in as ``user``; ``routes`` (URL pattern to
    handler) answer some of its requests in place of the server."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    page = browser.new_page(ignore_https_errors=True)  # the deployment's own CA
    for pattern, handler in (routes or {}).items():
        page.route(pattern, handler)
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


AUDIO_FLOWING = """() => {
  const call = window.conclaveCall;
  if (!call) return false;
  call.getStats().then((report) => {
    let received = 0, sent = 0;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") received += s.packetsReceived || 0;
      if (s.type === "outbound-rtp" && s.kind === "audio") sent += s.packetsSent || 0;
    });
    window.testAudioPackets = {call, received, sent};
  });
  const seen = window.testAudioPackets;  // this call's, not an earlier one's
  if (!seen || seen.call !== call || !(seen.received > 0 && seen.sent > 0)) return false;
  return {received: seen.received, sent: seen.sent};
}"""
"""Polled in the page: the call's RTP audio packet counts once packets have gone
both ways, false until then (``window.conclaveCall`` is the call's
RTCPeerConnection). ``wait_for_function`` does not wait for a promise (it is
truthy), so each poll starts ``getStats()`` and reads what the previous one
found."""


PLAYING = """() => {
  const audio = document.getElementById("remote-audio");
  return audio.srcObject !== null && audio.srcObject.getAudioTracks().length > 0 && !audio.paused;
}"""


def call_and_hear(caller: object, callee: object) -> dict[str, dict[str, int]]:
    """``caller`` (alice's page, watching nobody yet) calls bob, whose page
    answers; both see the call up and its RTP audio flowing both ways, and the
    remote audio playing. Returns the packet counts seen on each side."""
    from playwright.sync_api import Page, expect

    assert isinstance(caller, Page) and isinstance(callee, Page)
    caller.get_by_label("Add a contact (user name)").fill("bob")
    caller.get_by_role("button", name="Add", exact=True).click()
    caller.get_by_role("button", name="Call bob").click()
    expect(caller.locator("#call-status")).to_have_text("Calling bob…", timeout=WAIT_MS)
    expect(callee.locator("#call-status")).to_have_text("Incoming call from alice", timeout=WAIT_MS)
    incoming = callee.get_by_role("group", name="Incoming call from alice")
    expect(incoming.get_by_role("button", name="Decline")).to_be_visible()
    incoming.get_by_role("button", name="Answer").click()
    for page, other in ((caller, "bob"), (callee, "alice")):
        expect(page.locator("#call-status")).to_have_text(f"In call with {other}", timeout=WAIT_MS)
        expect(page.get_by_role("button", name="Hang up")).to_be_visible()

    counts = {}
    for name, page in (("alice", caller), ("bob", callee)):
        flowing = page.wait_for_function(AUDIO_FLOWING, timeout=WAIT_MS, polling=200)
        counts[name] = flowing.json_value()
        assert counts[name]["received"] > 0 and counts[name]["sent"] > 0, counts
        page.wait_for_function(PLAYING, timeout=WAIT_MS)  # through the page's <audio>
    print(f"RTP audio packets: {counts}")
    return counts


def hang_up(caller: object, callee: object) -> None:
    """The caller hangs up; both pages say the call ended and can call again."""
    from playwright.sync_api import Page, expect

    assert isinstance(caller, Page) and isinstance(callee, Page)
    caller.get_by_role("button", name="Hang up").click()
    for page in (caller, callee):
        expect(page.locator("#call-status")).to_have_text("Call ended", timeout=WAIT_MS)
        expect(page.get_by_role("button", name="Hang up")).to_be_hidden()
        assert page.evaluate("window.conclaveCall") is None
    expect(caller.get_by_role("button", name="Call bob")).to_be_enabled()


ICE_SERVERS = "() => window.conclaveCall.getConfiguration().iceServers"


def test_a_browser_calls_another_and_audio_flows_both_ways(
    make_server: Callable[..., ConclaveServer], browsers: list[object]
) -> None:
    """Alice calls Bob from the page, Bob answers, RTP audio is sent and received
    on both sides (WebRTC statistics), Alice hangs up and both pages say so;
    then Bob declines her second call."""
    from playwright.sync_api import expect

    server = make_server(config=WEB)
    port, _origin = web_port_and_origin(server)
    url = f"https://127.0.0.1:{port}/"
    alice = sign_in(browsers[0], url, "alice")
    bob = sign_in(browsers[1], url, "bob")
    call_and_hear(alice, bob)
    # This deployment has no media relay (the REST API answers 404 for it): both
    # pages call with no ICE servers, on host candidates only.
    assert alice.evaluate(ICE_SERVERS) == []  # type: ignore[attr-defined]
    assert bob.evaluate(ICE_SERVERS) == []  # type: ignore[attr-defined]
    hang_up(alice, bob)

    # She calls again and he declines (603): each page says so.
    alice.get_by_role("button", name="Call bob").click()  # type: ignore[attr-defined]
    bob.get_by_role("button", name="Decline").click()  # type: ignore[attr-defined]
    expect(bob.locator("#call-status")).to_have_text("Call declined", timeout=WAIT_MS)  # type: ignore[attr-defined]
    expect(alice.locator("#call-status")).to_have_text(  # type: ignore[attr-defined]
        "bob declined the call", timeout=WAIT_MS
    )
    expect(alice.get_by_role("button", name="Call bob")).to_be_enabled()  # type: ignore[attr-defined]


def test_the_page_takes_its_ice_servers_from_the_rest_api(
    make_server: Callable[..., ConclaveServer], browsers: list[object]
) -> None:
    """With a media relay in the deployment, the page signs in to the REST API
    with the user's name and password and the relay credentials it answers
    become the call's ICE servers; an answer that is not JSON (played for Bob's
    page by a Playwright route) means no relay. The relay named here does not
    exist: the call still gets audio through on host candidates, the
    unreachable relay delaying it by a few seconds at most."""
    from playwright.sync_api import Route

    relay = "127.0.0.1:9"  # the discard port: no TURN server answers there
    server = make_server(config={**WEB, "media_relay": {"enabled": True, "servers": [relay]}})
    port, _origin = web_port_and_origin(server)
    url = f"https://127.0.0.1:{port}/"
    alice = sign_in(browsers[0], url, "alice")

    def not_json(route: Route) -> None:
        route.fulfill(status=200, body="<html>not JSON</html>", content_type="application/json")

    bob = sign_in(browsers[1], url, "bob", routes={"**/api/v1/me/relay": not_json})
    call_and_hear(alice, bob)

    (used,) = alice.evaluate(ICE_SERVERS)  # type: ignore[attr-defined]
    assert used["urls"] == [f"turn:{relay}?transport=udp", f"turn:{relay}?transport=tcp"]
    assert used["username"].endswith(":alice@localhost") and used["credential"], used
    assert bob.evaluate(ICE_SERVERS) == []  # type: ignore[attr-defined]
    hang_up(alice, bob)
