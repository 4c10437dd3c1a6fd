"""The JSON log pipeline, its sink, and the agent's AlwaysOn and debug selection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from conclave.ops import log as logsetup
from conclave.ops.agent import AgentSettings, LoggingAgent, add_key_events
from conclave.ops.trace import DebugSession, Tracer

from .conftest import Pki, run


@pytest.mark.usefixtures("logging_configured")
def test_every_event_carries_the_common_fields(capsys: pytest.CaptureFixture[str]) -> None:
    logsetup.configure(role="standard", host="test-host")  # writes to capsys's stderr
    seen: list[dict[str, Any]] = []
    logsetup.set_sink(lambda event: seen.append(dict(event)))
    structlog.contextvars.bind_contextvars(call_id="abc", user="alice")
    try:
        logsetup.get("conclave.test").warning("something odd", detail=1)
        logsetup.get("conclave.test").info("listening", host="0.0.0.0", port=5061)
    finally:
        structlog.contextvars.clear_contextvars()
    first = json.loads(capsys.readouterr().err.splitlines()[0])
    for event in (first, seen[0]):
        assert event["host"] == "test-host" and event["role"] == "standard"
        assert event["level"] == "warning" and event["event"] == "something odd"
        assert event["call_id"] == "abc" and event["user"] == "alice"
        assert event["time"].endswith("Z")
    # An event's own "host" (a bound address) must not hide which server logged it.
    assert seen[1]["host"] == "test-host" and seen[1]["address"] == "0.0.0.0"


@pytest.mark.usefixtures("logging_configured")
def test_a_failing_sink_never_stops_logging(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(_event: object) -> None:
        raise RuntimeError("boom")

    logsetup.configure(role="standard", host="test-host")
    logsetup.set_sink(broken)
    logsetup.get("conclave.test").error("still logged")
    assert "still logged" in capsys.readouterr().err


def test_always_on_and_debug_selection(pki: Pki, tmp_path: Path) -> None:
    settings = AgentSettings(
        host="127.0.0.1",
        port=9,
        server_name="127.0.0.1",
        ca=pki.ca_cert,
        cert=None,
        key=None,
        acks=True,
        buffer_dir=tmp_path / "buffer",
        buffer_max=1 << 20,
    )
    tracer = Tracer()
    add_key_events("archive written")

    async def scenario() -> int:
        agent = LoggingAgent(settings, tracer=tracer)
        agent.install()
        for event in (
            {"event": "chatter", "level": "info"},
            {"event": "chatter", "level": "debug", "user": "bob"},
            {"event": "oops", "level": "warning"},
            {"event": "broken", "level": "error"},
            {"event": "register", "level": "info", "user": "alice"},
            {"event": "archive written", "level": "info"},
        ):
            agent.sink(event)
        tracer.set_sessions([DebugSession("s", until=2e9, user="bob")])
        agent.sink({"event": "chatter", "level": "info", "user": "bob"})
        agent.sink({"event": "chatter", "level": "info", "user": "carol"})
        agent.collect()
        assert agent.buffer is not None
        count = agent.buffer.count
        tracer.set_sessions([])
        await agent.stop()
        return count

    # oops, broken, register, archive written, and bob's chatter while debugging.
    assert run(scenario()) == 5
    logsetup.set_sink(None)


def test_without_a_controller_nothing_is_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = LoggingAgent(None)
        agent.install()
        agent.sink({"event": "oops", "level": "error"})
        agent.collect()
        agent.start()
        assert agent.buffer is None and not agent.connected
        await agent.stop()

    run(scenario())
    assert not list(tmp_path.iterdir())


def test_an_unusable_buffer_disables_forwarding_not_the_server(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "buffer").write_text("a file where the buffer directory should be")
    settings = AgentSettings(
        host="127.0.0.1",
        port=9,
        server_name="127.0.0.1",
        ca=pki.ca_cert,
        cert=None,
        key=None,
        acks=True,
        buffer_dir=tmp_path / "buffer",
        buffer_max=1 << 20,
    )
    with structlog.testing.capture_logs() as events:
        agent = LoggingAgent(settings)
    assert agent.settings is None and agent.buffer is None
    assert events[0]["event"] == "log buffer unusable; events are not forwarded"
