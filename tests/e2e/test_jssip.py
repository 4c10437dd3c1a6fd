"""JsSIP, the SIP stack of the browser client, against Conclave over WebSocket.

The real JsSIP (npm, run by Node with the ``ws`` package as its WebSocket)
signs in with digest authentication as a browser would (its Contact and Via
name a made-up ``.invalid`` host: only the WebSocket reaches it), with the
page's Origin, and exchanges messages both ways with a user on SIP/TLS.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import PASSWORDS
from .server import ConclaveServer
from .test_im import send_im, signed_in
from .test_presence import FAST, Peer, pidf
from .test_sip_websocket import WEB, web_port_and_origin

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "web" / "node_modules"
WAIT = 15.0


def node() -> str:
    """Node and the npm packages (``make`` installs them); missing: a failure under
    CI=true, a skip otherwise."""
    path = shutil.which("node")
    if path is None or not (NODE_MODULES / "jssip").is_dir():
        missing = "node is not installed" if path is None else "web/node_modules lacks jssip"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {missing} (npm ci --prefix web)")
        pytest.skip(missing)
    return path


class JsSipPeer:
    """The Node process; its JSON lines read on a thread."""

    def __init__(self, url: str, uri: str, password: str, origin: str, ca: Path) -> None:
        env = dict(os.environ, NODE_PATH=str(NODE_MODULES), NODE_EXTRA_CA_CERTS=str(ca))
        self.proc = subprocess.Popen(
            [node(), str(Path(__file__).with_name("jssip_peer.js")), url, uri, password, origin],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env,
        )  # fmt: skip
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def expect(self, name: str) -> dict[str, Any]:
        seen = []
        while True:
            try:
                event = self.events.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"JsSIP never said {name!r}; it said {seen}") from None
            if event["event"] == name:
                return event
            seen.append(event)

    def command(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.command(quit=True)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT)


def test_jssip_signs_in_and_talks_to_a_tls_user(make_server: Callable[..., ConclaveServer]) -> None:
    node()
    server = make_server(config=WEB)
    port, origin = web_port_and_origin(server)
    url = f"wss://localhost:{port}/sip"
    alice = JsSipPeer(url, "sip:alice@localhost", PASSWORDS["alice"], origin, server.ca)
    try:
        alice.expect("registered")
        bob = signed_in(server, "bob")

        alice.command(message={"to": "sip:bob@localhost", "body": "hello from JsSIP"})
        incoming = bob.recv_request()
        assert (incoming.method, incoming.body) == ("MESSAGE", b"hello from JsSIP")
        bob.reply(incoming, 200)
        assert alice.expect("sent")["status"] == 200

        send_im(bob, "bob", "alice", b"hello, JsSIP")
        got = alice.expect("message")
        assert (got["from"], got["body"]) == ("sip:bob@localhost", "hello, JsSIP")
        assert bob.final().status == 200
    finally:
        alice.stop()


def test_jssip_watches_a_tls_user_s_presence(make_server: Callable[..., ConclaveServer]) -> None:
    node()
    server = make_server(config={**WEB, **FAST})
    port, origin = web_port_and_origin(server)
    alice = JsSipPeer(
        f"wss://localhost:{port}/sip", "sip:alice@localhost", PASSWORDS["alice"], origin, server.ca
    )
    try:
        alice.expect("registered")
        bob = Peer(server, "bob")
        etag = bob.publish(pidf("bob", note="at my desk"))
        alice.command(subscribe={"target": "sip:bob@localhost"})
        first = alice.expect("notify")
        assert "<basic>open</basic>" in first["body"]  # the note is for bob's contacts only
        bob.publish(pidf("bob", activity="busy"), etag=etag)
        assert "<rpid:busy/>" in alice.expect("notify")["body"]
    finally:
        alice.stop()
