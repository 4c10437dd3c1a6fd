"""Agent to controller over real mutual TLS: delivery, acknowledgements, outages, overflow."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from pathlib import Path
from typing import Any

import pytest

from conclave.ops import metrics
from conclave.ops.agent import AgentSettings, LoggingAgent
from conclave.ops.controller import ControllerSettings, LoggingController
from conclave.ops.logstore import open_readonly
from conclave.ops.syslog import OctetCountingFramer, event_of, parse_message
from conclave.pki import create_ca
from conclave.pki.tls import server_context

from .conftest import Pki, run, wait_until

RECONNECT_WAIT = 40.0
"""Seconds for an agent to notice a controller is back (its backoff tops at 10 s)."""


def controller_settings(pki: Pki, tmp_path: Path, port: int = 0) -> ControllerSettings:
    return ControllerSettings(
        host="127.0.0.1",
        port=port,
        store=tmp_path / "controller" / "events.db",
        retention=86400.0,
        cert=pki.cert,
        key=pki.key,
        client_cas=(pki.ca_cert,),
    )


def agent_settings(
    pki: Pki, tmp_path: Path, port: int, *, acks: bool = True, buffer_max: int = 1 << 20
) -> AgentSettings:
    return AgentSettings(
        host="127.0.0.1",
        port=port,
        server_name="127.0.0.1",
        ca=pki.ca_cert,
        cert=pki.cert,
        key=pki.key,
        acks=acks,
        buffer_dir=tmp_path / "logbuffer",
        buffer_max=buffer_max,
    )


BASE = dt.datetime.now(dt.UTC)


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "event": "register",
        "level": "info",
        "time": (BASE + dt.timedelta(milliseconds=n)).isoformat(),
        "host": "logs.example.test",  # a name the agent's certificate carries
        "role": "standard",
        "n": n,
        **fields,
    }


def stored(tmp_path: Path) -> list[dict[str, Any]]:
    store = open_readonly(tmp_path / "controller" / "events.db")
    try:
        return [e for e in store.search() if e.get("event") == "register"]
    finally:
        store.close()


def reports(tmp_path: Path) -> list[dict[str, Any]]:
    store = open_readonly(tmp_path / "controller" / "events.db")
    try:
        return [e for e in store.search() if e.get("event") == "log events dropped"]
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_events_are_delivered_acknowledged_and_deleted(pki: Pki, tmp_path: Path) -> None:
    async def scenario() -> None:
        controller = LoggingController(controller_settings(pki, tmp_path))
        port = await controller.start()
        agent = LoggingAgent(agent_settings(pki, tmp_path, port))
        agent.install()
        agent.start()
        for n in range(50):
            agent.sink(event(n, call_id="c1"))
        agent.sink({"event": "chatter", "level": "info"})  # not AlwaysOn: not forwarded
        assert agent.buffer is not None
        await wait_until(lambda: agent.delivered == 50, "50 events acknowledged")
        assert agent.buffer.count == 0
        await agent.stop()
        await controller.stop()

    run(scenario())
    events = stored(tmp_path)
    assert [e["n"] for e in events] == list(range(50))
    assert all(e["call_id"] == "c1" and e["host"] == "logs.example.test" for e in events)


def test_nothing_is_lost_while_the_controller_is_down(pki: Pki, tmp_path: Path) -> None:
    async def scenario() -> None:
        controller = LoggingController(controller_settings(pki, tmp_path))
        port = await controller.start()
        agent = LoggingAgent(agent_settings(pki, tmp_path, port))
        agent.install()
        agent.start()
        for n in range(5):
            agent.sink(event(n))
        await wait_until(lambda: agent.delivered == 5, "first events acknowledged")
        await controller.stop()
        await wait_until(lambda: not agent.connected, "the agent to notice the outage")
        for n in range(5, 30):
            agent.sink(event(n))
        assert agent.buffer is not None
        await wait_until(lambda: agent.buffer is not None and agent.buffer.count == 25, "25")
        again = LoggingController(controller_settings(pki, tmp_path, port))
        await again.start()
        await wait_until(lambda: agent.delivered == 30, "all delivered", RECONNECT_WAIT)
        await agent.stop()
        await again.stop()

    run(scenario())
    assert [e["n"] for e in stored(tmp_path)] == list(range(30))


def test_buffered_events_survive_an_agent_restart(pki: Pki, tmp_path: Path) -> None:
    port = free_port()

    async def before() -> None:
        agent = LoggingAgent(agent_settings(pki, tmp_path, port))
        agent.install()
        agent.start()
        for n in range(10):
            agent.sink(event(n))
        await agent.stop()  # the controller never answered: all stay on disk

    async def after() -> None:
        controller = LoggingController(controller_settings(pki, tmp_path, port))
        await controller.start()
        agent = LoggingAgent(agent_settings(pki, tmp_path, port))
        agent.install()
        assert agent.buffer is not None and agent.buffer.count == 10
        agent.start()
        await wait_until(lambda: agent.delivered == 10, "buffered events delivered")
        await agent.stop()
        await controller.stop()

    run(before())
    run(after())
    assert [e["n"] for e in stored(tmp_path)] == list(range(10))


@pytest.mark.usefixtures("logging_configured")
def test_overflow_is_counted_and_reported(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    big = "x" * 1000
    dropped_before = metrics.REGISTRY.get_sample_value("conclave_log_events_dropped_total") or 0

    async def scenario() -> None:
        agent = LoggingAgent(agent_settings(pki, tmp_path, port, buffer_max=20_000))
        agent.install()
        agent.start()
        for n in range(40):
            agent.sink(event(n, padding=big))
        agent.collect()
        assert agent.buffer is not None and agent.buffer.count < 40
        kept = agent.buffer.count
        controller = LoggingController(controller_settings(pki, tmp_path, port))
        await controller.start()
        agent.install()  # the in-process controller took the log sink; take it back
        await wait_until(lambda: agent.delivered >= kept + 1, "kept events and the report", 40)
        await agent.stop()
        await controller.stop()

    run(scenario())
    dropped = (metrics.REGISTRY.get_sample_value("conclave_log_events_dropped_total") or 0) - (
        dropped_before
    )
    assert dropped > 0
    (report,) = reports(tmp_path)
    assert report["count"] == dropped and report["level"] == "warning"
    assert [e["n"] for e in stored(tmp_path)] == list(range(40 - int(dropped)))


def test_plain_syslog_receiver_without_acknowledgements(pki: Pki, tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def scenario() -> None:
        got_all = asyncio.Event()

        async def receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            framer = OctetCountingFramer()
            while data := await reader.read(4096):
                for raw in framer.feed(data):
                    received.append(event_of(parse_message(raw)))
                if len(received) >= 20:
                    got_all.set()
            writer.close()

        context = server_context(pki.cert, pki.key)
        server = await asyncio.start_server(receiver, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        agent = LoggingAgent(agent_settings(pki, tmp_path, port, acks=False))
        agent.install()
        agent.start()
        for n in range(20):
            agent.sink(event(n))
        await asyncio.wait_for(got_all.wait(), 10)
        await wait_until(lambda: agent.delivered >= 20, "written counts as delivered")
        await agent.stop()
        server.close()

    run(scenario())
    assert [e["n"] for e in received] == list(range(20))


def test_agents_of_an_untrusted_ca_are_refused(pki: Pki, tmp_path: Path) -> None:
    stranger = create_ca(tmp_path / "other-ca", common_name="Stranger CA")
    stranger.issue_server(["x.example.test"], ["127.0.0.1"]).write(
        tmp_path / "x.crt", tmp_path / "x.key"
    )

    async def scenario() -> None:
        controller = LoggingController(controller_settings(pki, tmp_path))
        port = await controller.start()
        settings = agent_settings(pki, tmp_path, port)
        rogue = AgentSettings(
            **{**settings.__dict__, "cert": tmp_path / "x.crt", "key": tmp_path / "x.key"}
        )
        agent = LoggingAgent(rogue)
        agent.install()
        agent.start()
        agent.sink(event(1))
        await wait_until(lambda: agent._down_logged or agent.connected, "a verdict")
        await agent.stop()
        await controller.stop()

    run(scenario())
    assert stored(tmp_path) == []
