"""An attacker feeds the logging controller.

The controller is where an incident is investigated, so what it stores must
come from the deployment's servers and say truthfully which server sent it.
The attacker here:

* signs in to the controller with a *user's* client certificate (the same
  CA issues those) and tries to plant events;
* holds a real server's certificate and claims to be another host, another
  role, at a time of its choosing;
* keeps using a server certificate after it was revoked, on the connection
  it had and on new ones;
* with a topology, presents a server certificate for a host that is not in it.

Each attempt runs against a real controller over real mutual TLS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conclave.config import load_config
from conclave.ops.controller import AgentHost, ControllerSettings, LoggingController
from conclave.ops.logstore import open_readonly
from conclave.ops.syslog import format_event, frame
from conclave.pki import create_ca
from conclave.pki.tls import client_context
from tests.ops.conftest import run, wait_until
from tests.ops.processes import ControllerProcess

CONCLAVE = [sys.executable, "-m", "conclave"]
TIMEOUT = 10.0


def conclave(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CONCLAVE, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    conclave("init", "--domain", "example.test", "--dir", str(path), "--host", "fe1.example.test")
    conclave("user", "add", "alice", "--dir", str(path))
    return path


@pytest.fixture
def controller(data: Path) -> Iterator[ControllerProcess]:
    started = ControllerProcess(data).start()
    yield started
    started.stop()


def stored(data: Path, text: str) -> list[dict[str, Any]]:
    config = load_config(data)
    store = open_readonly(config.path(data, config.logging_controller.store))
    try:
        return store.search(text=text)
    finally:
        store.close()


class Agent:
    """A hand-made agent: one TLS connection presenting ``cert``, sending crafted events."""

    def __init__(
        self, port: int, ca: Path, cert: Path, key: Path, server_name: str = "fe1.example.test"
    ) -> None:
        context = client_context(ca, cert_path=cert, key_path=key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        try:
            self.sock = context.wrap_socket(raw, server_hostname=server_name)
        except BaseException:
            raw.close()
            raise
        self.seq = 0

    def send(self, **event: Any) -> bytes:
        """Send one event; what comes back: ``ack N`` once stored, b"" if the controller hung up."""
        self.seq += 1
        self.sock.sendall(frame(format_event(event, origin="attacker01", seq=self.seq)))
        try:
            return self.sock.recv(64)
        except (ssl.SSLError, ConnectionError):
            return b""

    def close(self) -> None:
        self.sock.close()


def refused(
    port: int, ca: Path, cert: Path, key: Path, server_name: str = "fe1.example.test"
) -> bool:
    """True when the controller will not store anything sent with ``cert``."""
    try:
        agent = Agent(port, ca, cert, key, server_name)
    except ssl.SSLCertVerificationError:
        raise  # we refused the controller: a mistake in the test, not a refusal
    except (ssl.SSLError, OSError):
        return True  # refused in the handshake
    try:
        return not agent.send(event="probe", level="warning").startswith(b"ack")
    finally:
        agent.close()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def test_a_users_client_certificate_cannot_plant_events(
    data: Path, controller: ControllerProcess
) -> None:
    conclave("certs", "issue", "--dir", str(data), "--client", "alice")
    cert, key = data / "tls" / "clients" / "alice.crt", data / "tls" / "clients" / "alice.key"
    agent = Agent(controller.port, data / "ca" / "ca.crt", cert, key)
    try:
        answer = agent.send(
            event="admin password reset", level="warning", host="fe1.example.test",
            role="standard", user="ceo", time=now_iso(),
        )  # fmt: skip
    finally:
        agent.close()
    assert answer == b""
    refusal = controller.wait_for(lambda e: e.get("event") == "agent refused")
    assert "not a server certificate" in refusal["reason"]
    assert refusal["certificate"] == "alice@example.test"
    assert stored(data, "admin password reset") == []


def test_a_server_cannot_speak_for_another_host_role_or_time(
    data: Path, controller: ControllerProcess
) -> None:
    agent = Agent(
        controller.port, data / "ca" / "ca.crt", data / "tls" / "server.crt",
        data / "tls" / "server.key",
    )  # fmt: skip
    try:
        assert agent.send(
            event="planted evidence", level="warning", host="ceo-laptop.example.test",
            role="director", time="2099-01-01T00:00:00Z",
        ).startswith(b"ack")  # fmt: skip
        assert agent.send(
            event="honest event", level="warning", host="fe1.example.test", role="standard",
            time=now_iso(),
        ).startswith(b"ack")  # fmt: skip
    finally:
        agent.close()
    (planted,) = stored(data, "planted evidence")
    assert planted["host"] == "fe1.example.test" and planted["role"] == "standard"
    assert planted["claimed_host"] == "ceo-laptop.example.test"
    assert planted["claimed_role"] == "director"
    assert planted["claimed_time"] == "2099-01-01T00:00:00Z"
    assert planted["time"] < now_iso()
    (honest,) = stored(data, "honest event")
    assert not {"claimed_host", "claimed_role", "claimed_time"} & honest.keys()
    corrected = controller.wait_for(lambda e: e.get("event") == "agent event corrected")
    assert corrected["fields"] == ["host", "role", "time"]


def test_a_revoked_server_certificate_is_cut_off(data: Path, controller: ControllerProcess) -> None:
    issued = conclave("certs", "issue", "--dir", str(data), "--host", "fe2.example.test").stdout
    serial = next(line for line in issued.splitlines() if "certificate" in line).split()[3]
    cert = data / "tls" / "issued" / "fe2.example.test.crt"
    key = data / "tls" / "issued" / "fe2.example.test.key"
    ca = data / "ca" / "ca.crt"
    agent = Agent(controller.port, ca, cert, key)
    try:
        assert agent.send(event="before", level="warning").startswith(b"ack")
        conclave("certs", "revoke", serial, "--dir", str(data), "--reason", "keyCompromise")
        assert controller.proc is not None
        controller.proc.send_signal(signal.SIGHUP)  # or wait for the file poll
        controller.wait_for(lambda e: e.get("event") == "agent tls reloaded")
        cut = controller.wait_for(lambda e: e.get("reason") == "certificate revoked")
        assert cut["serial"] == serial and cut["agent_host"] == "fe2.example.test"
        # The open connection is closed by the controller: nothing more is stored.
        assert agent.send(event="after revocation", level="warning") == b""
    finally:
        agent.close()
    assert refused(controller.port, ca, cert, key)  # and no new connection either
    assert stored(data, "after revocation") == []
    assert len(stored(data, "before")) == 1


# --- with a topology: in process, the files polled -------------------------------------


LOG1 = "log1.example.test"


def test_only_topology_hosts_are_agents_and_crls_are_polled(tmp_path: Path) -> None:
    authority = create_ca(tmp_path / "ca", common_name="Deployment CA")
    authority.issue_server(["log1.example.test"], ["127.0.0.1"]).write(
        tmp_path / "log1.crt", tmp_path / "log1.key"
    )
    fe1 = authority.issue_server(["fe1.example.test", "example.test"])
    fe1.write(tmp_path / "fe1.crt", tmp_path / "fe1.key")
    authority.issue_server(["rogue.example.test"]).write(
        tmp_path / "rogue.crt", tmp_path / "rogue.key"
    )
    settings = ControllerSettings(
        host="127.0.0.1",
        port=0,
        store=tmp_path / "events.db",
        retention=86400.0,
        cert=tmp_path / "log1.crt",
        key=tmp_path / "log1.key",
        client_cas=(authority.cert_path,),
        agents=(AgentHost("fe1.example.test", ("standard",)),),
        reload_poll=0.05,
    )

    async def scenario() -> None:
        controller = LoggingController(settings)
        port = await controller.start()
        try:
            ca = authority.cert_path
            rogue = (port, ca, tmp_path / "rogue.crt", tmp_path / "rogue.key", LOG1)
            assert await asyncio.to_thread(refused, *rogue)
            agent = await asyncio.to_thread(
                Agent, port, ca, tmp_path / "fe1.crt", tmp_path / "fe1.key", LOG1
            )
            try:
                answer = await asyncio.to_thread(agent.send, event="hello", level="warning")
                assert answer.startswith(b"ack")
                authority.revoke(fe1.serial, reason="keyCompromise")  # no signal: the poll
                await wait_until(lambda: controller.received == 1 and not controller._connections,
                                 "the revoked agent's connection closed")  # fmt: skip
                assert await asyncio.to_thread(agent.send, event="late", level="warning") == b""
            finally:
                agent.close()
            assert await asyncio.to_thread(
                refused, port, ca, tmp_path / "fe1.crt", tmp_path / "fe1.key", LOG1
            )
        finally:
            await controller.stop()

    run(scenario())
    store = open_readonly(tmp_path / "events.db")
    try:
        events = [e for e in store.search() if e.get("event") in ("hello", "late", "probe")]
    finally:
        store.close()
    assert [(e["event"], e["host"], e["role"]) for e in events] == [
        ("hello", "fe1.example.test", "standard")
    ]
