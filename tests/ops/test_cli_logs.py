"""``conclave logs``: search output, debug session control, option errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from conclave.cli import main
from conclave.config import load_config
from conclave.ops.logstore import LogStore, Received
from conclave.ops.trace import read_sessions


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs-cli") / "data"
    result = CliRunner().invoke(main, ["init", "--domain", "example.test", "--dir", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def with_events(data_dir: Path) -> Path:
    config = load_config(data_dir)
    store = LogStore(config.path(data_dir, config.logging_controller.store))
    rows = [
        ("2025-01-01T00:00:02Z", "fe2", "register", {"call_id": "X", "user": "alice"}),
        ("2025-01-01T00:00:01Z", "fe1", "register", {"call_id": "X", "user": "alice"}),
        ("2025-01-01T00:00:03Z", "fe1", "authentication failed", {"source": "192.0.2.9"}),
        (
            "2025-01-01T00:00:04Z",
            "fe1",
            "sip trace",
            {"call_id": "X", "message": "OPTIONS sip:x SIP/2.0\r\nCall-ID: X\r\n\r\n"},
        ),
    ]
    store.insert(
        Received(
            {"time": t, "host": h, "role": "standard", "level": "info", "event": e, **extra},
            "o",
            i,
            0.0,
        )
        for i, (t, h, e, extra) in enumerate(rows)
    )
    store.close()
    return data_dir


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_search_text_and_json(with_events: Path) -> None:
    code, out = invoke("logs", "search", "--dir", str(with_events), "--call-id", "X")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("2025-01-01T00:00:01Z fe1 standard info register")
    assert "call_id=X" in lines[0] and "user=alice" in lines[0]
    assert lines[1].startswith("2025-01-01T00:00:02Z fe2 ")
    assert lines[2].endswith("sip trace call_id=X") and lines[3] == "    OPTIONS sip:x SIP/2.0"
    code, out = invoke("logs", "search", "--dir", str(with_events), "--user", "alice", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["host"], e["event"]) for e in events] == [("fe1", "register"), ("fe2", "register")]
    code, out = invoke(
        "logs", "search", "--dir", str(with_events), "--since", "2025-01-01T00:00:03",
        "--text", "192.0.2.9",
    )  # fmt: skip
    assert code == 0 and out.count("\n") == 1 and "authentication failed" in out


def test_search_option_errors(with_events: Path, tmp_path: Path) -> None:
    code, out = invoke("logs", "search", "--dir", str(with_events), "--since", "last tuesday")
    assert code == 1 and "--since: use an ISO 8601 time" in out
    code, out = invoke("logs", "search", "--dir", str(tmp_path))
    assert code == 1 and "not a Conclave data directory" in out


def test_search_without_a_store(tmp_path: Path) -> None:
    path = tmp_path / "fresh"
    assert invoke("init", "--domain", "example.test", "--dir", str(path))[0] == 0
    code, out = invoke("logs", "search", "--dir", str(path))
    assert code == 1 and "no event store" in out


FAKE_SERVER = """
import signal, sys
signal.signal(signal.SIGUSR1, lambda *_: print("SIGUSR1", flush=True))
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def fake_server(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that looks like `conclave serve` (by its command line) and reports SIGUSR1."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, "conclave", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    (data_dir / "conclave.pid").write_text(f"{proc.pid}\n")
    yield proc
    (data_dir / "conclave.pid").unlink()
    proc.kill()
    proc.wait(10)


def test_debug_start_status_stop(data_dir: Path, fake_server: subprocess.Popen[str]) -> None:
    code, out = invoke(
        "logs", "debug", "start", "--dir", str(data_dir), "--user", "Alice", "--for", "10m"
    )
    assert code == 0, out
    assert fake_server.stdout is not None and fake_server.stdout.readline() == "SIGUSR1\n"
    assert "user alice until" in out and f"Server {fake_server.pid} told" in out
    (session,) = read_sessions(data_dir)
    assert session.user == "alice"
    code, out = invoke("logs", "debug", "status", "--dir", str(data_dir))
    assert f"{session.id} user alice until" in out and "(active)" in out
    code, out = invoke("logs", "debug", "stop", "--dir", str(data_dir))
    assert code == 0 and "Stopped 1 debug session(s)." in out
    assert fake_server.stdout.readline() == "SIGUSR1\n"
    assert read_sessions(data_dir) == []
    code, out = invoke("logs", "debug", "status", "--dir", str(data_dir))
    assert "No debug session is active." in out


def test_debug_start_errors(data_dir: Path) -> None:
    code, out = invoke("logs", "debug", "start", "--dir", str(data_dir))
    assert code == 1 and "give --user or --call-id" in out
    code, out = invoke(
        "logs", "debug", "start", "--dir", str(data_dir), "--call-id", "x", "--for", "2d"
    )
    assert code == 1 and "at most 24h" in out
    code, out = invoke(
        "logs", "debug", "start", "--dir", str(data_dir), "--call-id", "x", "--for", "soon"
    )
    assert code == 1 and "duration" in out
    code, out = invoke("logs", "debug", "start", "--dir", str(data_dir), "--call-id", "abc")
    assert code == 0 and "No server is running" in out
    invoke("logs", "debug", "stop", "--dir", str(data_dir))


def test_controller_listen_option_is_checked(data_dir: Path) -> None:
    code, out = invoke("logs", "controller", "--dir", str(data_dir), "--listen", "nowhere")
    assert code == 1 and "--listen: must be IP:port" in out


def test_controller_topology_option_is_checked(data_dir: Path, tmp_path: Path) -> None:
    code, out = invoke(
        "logs", "controller", "--dir", str(data_dir), "--topology", str(tmp_path / "none.toml")
    )
    assert code == 1 and "file not found" in out and "Traceback" not in out
