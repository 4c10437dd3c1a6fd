"""Debian's Linphone (``linphonec``) against a real server, certificate verification on.

Linphone verifies the server's certificate by name and does not match IP
addresses in certificates, so it is configured as ``make run`` prints: the
server as ``sip.<domain>`` (a name on the server's certificate) with
``maddr=127.0.0.1`` (no DNS entry needed). Two instances, alice and bob:
both register over TLS, message each other, alice watches bob's presence,
calls him (bob answers automatically), and hangs up.

Each linphonec is driven on its standard input; the test waits for the lines
it prints (never a fixed sleep), each wait bounded.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import PASSWORDS
from .peers_base import free_port, require_tool
from .server import ConclaveServer

DOMAIN = "example.test"
WAIT = 20.0
POLL = 0.2
"""Between two questions to linphonec about its registration."""


class Linphone:
    """One ``linphonec`` process, its console lines in a queue."""

    def __init__(self, server: ConclaveServer, user: str, home: Path) -> None:
        self.user = user
        self.server = server
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        data = home / ".local" / "share" / "linphone"  # its database must have a home
        data.mkdir(parents=True)
        port = server.ports["tls"]
        proxy = f"sip:sip.{DOMAIN}:{port};transport=tls;maddr=127.0.0.1"
        config = home / "linphonerc"
        config.write_text(
            f"[sip]\nsip_port=-1\nsip_tcp_port=0\nsip_tls_port={free_port('tcp')}\n"
            f"root_ca={server.ca}\nverify_server_certs=1\nverify_server_cn=1\n"
            "default_proxy=0\n\n"
            f"[proxy_0]\nreg_proxy=<{proxy}>\nreg_route=<{proxy};lr>\n"
            f"reg_identity=sip:{user}@{DOMAIN}\nreg_expires=600\nreg_sendregister=1\npublish=1\n\n"
            f"[auth_info_0]\nusername={user}\npasswd={PASSWORDS[user]}\n"
            f"realm={DOMAIN}\ndomain={DOMAIN}\n\n[video]\nenabled=0\n"
        )
        self.proc = subprocess.Popen(
            [require_tool("linphonec"), "-c", str(config), "-d", "0", "-a"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, HOME=str(home)),
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def expect(self, fragment: str, timeout: float = WAIT) -> str:
        """The next console line containing ``fragment``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            assert "Certificate verification failed" not in line, line
            if fragment in line:
                return line
        tail = "\n".join(self.seen[-30:])
        raise AssertionError(f"{self.user}: no line with {fragment!r} in {timeout}s:\n{tail}")

    def registered(self) -> None:
        """The server logged this user's successful REGISTER; linphonec agrees."""
        self.server.wait_for(
            lambda e: (
                e.get("event") == "register"
                and e.get("user") == self.user
                and e.get("status") == 200
            ),
            WAIT,
        )
        # linphonec prints nothing when its state changes: ask it, until it agrees
        # (a poll of a condition, bounded, not a wait for a fixed time).
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            self.command("status register")
            if self.expect("registered").startswith("registered,"):
                return
            time.sleep(POLL)
        raise AssertionError(f"{self.user}: linphonec never reported the registration")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def phones(
    make_server: Callable[..., ConclaveServer], tmp_path: Path
) -> Iterator[tuple[Linphone, Linphone]]:
    require_tool("linphonec")
    server = make_server(domain=DOMAIN)
    alice = Linphone(server, "alice", tmp_path / "alice")
    bob = Linphone(server, "bob", tmp_path / "bob")
    try:
        yield alice, bob
    finally:
        alice.close()
        bob.close()


def test_linphone_registers_messages_sees_presence_and_calls(
    phones: tuple[Linphone, Linphone],
) -> None:
    alice, bob = phones
    alice.registered()
    bob.registered()

    alice.command(f"chat sip:bob@{DOMAIN} hello bob")
    assert "hello bob" in bob.expect("Message received from")
    bob.command(f"chat sip:alice@{DOMAIN} hi alice")
    assert "hi alice" in alice.expect("Message received from")

    alice.command(f'friend add "bob" sip:bob@{DOMAIN}')
    alice.expect("is Online")

    alice.command(f"call sip:bob@{DOMAIN}")
    bob.expect("Receiving new incoming call")
    alice.expect("connected")
    alice.expect("On the phone")  # bob's presence while he is in the call

    alice.command("terminate")
    alice.expect("ended")
    bob.expect("ended")
