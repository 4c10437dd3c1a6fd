"""Centralized logging end to end: real servers, a real controller, real TLS.

Two deployments (two data directories, two CAs) feed one controller run from
the first one's data directory. The second deployment trusts the first's CA
for the controller's certificate (``[logging] controller_ca``), and the
controller accepts the second's servers by listing its CA in
``[logging_controller] client_cas``: the way two sites' deployments would
share one controller.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.processes import (
    ControllerProcess,
    HostServer,
    patch,
    search,
    wait_for_events,
)

from .conftest import PASSWORDS
from .server import CONCLAVE, ConclaveServer
from .sipclient import SipClient, digest_header

REG_URI = "sip:localhost"


def register(port: int, user: str, call_id: str, password: str | None = None) -> int:
    """REGISTER over UDP with ``call_id`` (challenge, then credentials)."""
    client = SipClient("udp", port)
    to = f"sip:{user}@localhost"
    headers = ["Expires: 600"]
    first = client.send(
        "REGISTER", REG_URI, from_user=user, to=to, headers=headers, call_id=call_id
    )
    auth = digest_header(
        first, user=user, password=password or PASSWORDS[user], method="REGISTER", uri=REG_URI
    )
    final = client.send(
        "REGISTER", REG_URI, from_user=user, to=to, headers=[*headers, auth], call_id=call_id
    )
    client.close()
    return final.status


@contextlib.contextmanager
def admin_api(server: ConclaveServer, user: str) -> Iterator[Any]:
    """An httpx client signed in to ``server``'s admin API as ``user``."""
    import httpx

    port = server.wait_for(lambda e: e.get("event") == "admin listening")["port"]
    trust = ssl.create_default_context(cafile=str(server.ca))
    with httpx.Client(base_url=f"https://127.0.0.1:{port}/api/v1", verify=trust) as http:
        signed = http.post("/session", json={"user": user, "password": PASSWORDS[user]})
        assert signed.status_code == 200, signed.text
        http.headers["Authorization"] = f"Bearer {signed.json()['token']}"
        yield http


class Deployment:
    """Servers and a controller started by a test, all stopped at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[ConclaveServer] = []
        self.controllers: list[ControllerProcess] = []

    def server(self, name: str, server_type: type[ConclaveServer] = ConclaveServer) -> Any:
        server = server_type(self.root / name, transports="tls,udp", users=dict(PASSWORDS))
        server.init()
        self.servers.append(server)
        return server

    def controller(self, server: ConclaveServer) -> ControllerProcess:
        controller = ControllerProcess(server.data_dir).start()
        self.controllers.append(controller)
        return controller

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        for controller in self.controllers:
            controller.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    made = Deployment(tmp_path)
    yield made
    made.close()


def test_one_call_on_two_servers_is_found_by_one_search(deployment: Deployment) -> None:
    a = deployment.server("a")
    b = deployment.server("b", HostServer)
    patch(a, {"logging_controller": {"client_cas": ["ca/ca.crt", str(b.ca)]}})
    controller = deployment.controller(a)
    target = f"127.0.0.1:{controller.port}"
    patch(a, {"logging": {"controller": target}})
    patch(a, {"admin": {"enabled": True, "bind": "127.0.0.1:0", "console": True,
                        "admins": ["carol"]}})  # fmt: skip
    patch(b, {"logging": {"controller": target, "controller_ca": str(a.ca)}})
    a.start()
    b.start()
    call_id = "call-" + os.urandom(6).hex()
    assert register(a.ports["udp"], "alice", call_id) == 200
    assert register(b.ports["udp"], "alice", call_id) == 200
    events = wait_for_events(a.data_dir, lambda found: len(found) >= 2, call_id=call_id)
    assert [(e["host"], e["event"], e["user"]) for e in events] == [
        ("127.0.0.1", "register", "alice"),
        ("localhost", "register", "alice"),
    ]
    assert events[0]["time"] < events[1]["time"]
    assert all(e["role"] == "standard" and e["level"] == "info" for e in events)
    # The command an operator runs finds the same, merged in time order.
    out = subprocess.run(
        [*CONCLAVE, "logs", "search", "--dir", str(a.data_dir), "--call-id", call_id],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert [line.split()[1] for line in out] == ["127.0.0.1", "localhost"]
    # The admin API searches the same store (the console's log search).
    with admin_api(a, "carol") as http:
        found = http.get("/admin/logs", params={"call_id": call_id}).json()
        assert [(e["host"], e["event"]) for e in found] == [
            ("127.0.0.1", "register"),
            ("localhost", "register"),
        ]
        assert http.get("/admin/logs", params={"user": "nobody-at-all"}).json() == []
    # Both servers' start-up is there too, each from its own host.
    hosts = {e["host"] for e in search(a.data_dir) if e["event"] == "ready"}
    assert hosts == {"127.0.0.1", "localhost"}


def test_no_event_is_lost_while_the_controller_is_down(deployment: Deployment) -> None:
    a = deployment.server("a")
    controller = deployment.controller(a)
    patch(a, {"logging": {"controller": f"127.0.0.1:{controller.port}"}})
    a.start()
    a.wait_for(lambda e: e.get("event") == "log controller connected")
    assert controller.stop() == 0
    # Traffic at once, before the agent may even have noticed the outage.
    call_ids = [f"outage-{i}-{os.urandom(4).hex()}" for i in range(8)]
    for call_id in call_ids:
        assert register(a.ports["udp"], "bob", call_id) == 200
    a.wait_for(
        lambda e: e.get("event") in ("log controller connection lost", "log controller unreachable")
    )
    restarted = ControllerProcess(a.data_dir, port=controller.port)
    deployment.controllers.append(restarted.start())
    found = wait_for_events(
        a.data_dir,
        lambda events: {e.get("call_id") for e in events} >= set(call_ids),
        timeout=60,
        user="bob",
    )
    registers = [e["call_id"] for e in found if e["event"] == "register"]
    assert registers == call_ids  # each once, in the order they happened


def test_debug_session_traces_a_user_redacted_and_ends_by_itself(
    deployment: Deployment,
) -> None:
    a = deployment.server("a")
    controller = deployment.controller(a)
    patch(a, {"logging": {"controller": f"127.0.0.1:{controller.port}"}})
    a.start()
    started = subprocess.run(
        [*CONCLAVE, "logs", "debug", "start", "--dir", str(a.data_dir), "--user", "carol",
         "--for", "4s"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "user carol until" in started.stdout
    a.wait_for(lambda e: e.get("event") == "debug session started" and e.get("user") == "carol")
    call_id = "debug-" + os.urandom(6).hex()
    assert register(a.ports["udp"], "carol", call_id) == 200
    assert register(a.ports["udp"], "alice", "not-traced-" + call_id) == 200
    traces = wait_for_events(
        a.data_dir, lambda events: len(events) >= 4, call_id=call_id, text="sip trace"
    )
    assert [(t["direction"], t["first_line"].split()[1]) for t in traces] == [
        ("in", "sip:localhost"),
        ("out", "401"),
        ("in", "sip:localhost"),
        ("out", "200"),
    ]
    credentials = traces[2]["message"]
    assert 'Authorization: Digest username="carol", realm="localhost" <redacted>' in credentials
    assert "response=" not in credentials and "cnonce=" not in credentials
    assert "nonce=" not in traces[1]["message"]
    ended = a.wait_for(lambda e: e.get("event") == "debug session ended", timeout=30)
    assert ended["reason"] == "time is up"
    after = "after-" + call_id
    assert register(a.ports["udp"], "carol", after) == 200
    a.wait_for(lambda e: e.get("event") == "register" and e.get("call_id") == after)
    assert not [e for e in a.lines if e.get("event") == "sip trace" and e.get("call_id") == after]
    traced = {e.get("call_id") for e in search(a.data_dir) if e["event"] == "sip trace"}
    assert traced == {call_id}
