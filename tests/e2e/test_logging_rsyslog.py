"""rsyslog (Debian) receives Conclave's events over RFC 5425 TLS when pointed at it.

rsyslogd runs in the foreground with a generated configuration in a temporary
directory: imtcp with the gtls stream driver (package rsyslog-gnutls),
mutual TLS with ``x509/certvalid`` against the deployment's CA, port 0 (the
bound port is written to a file), and everything received written to one
file in RFC 5424 format. Conclave's agent runs with ``controller_acks =
false``, as for any plain syslog server.

Under CI=true a missing rsyslogd or gtls driver fails the test (CI installs
them with scripts/install-peers.sh); elsewhere it is skipped.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conclave.ops.syslog import SD_ID, SyslogMessage, event_of, parse_message
from tests.ops.processes import patch

from .server import ConclaveServer
from .sipclient import SipClient, digest_header

WAIT = 30.0
REG_URI = "sip:localhost"

CONFIG = """\
global(
  workDirectory="{work}"
  maxMessageSize="256k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="x509/certvalid")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{port_file}")
action(type="omfile" file="{out}" template="RSYSLOG_SyslogProtocol23Format")
"""


def _need(found: bool, what: str) -> None:
    if found:
        return
    message = f"{what} is not installed (run scripts/install-peers.sh as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)  # outside CI only: under CI=true it failed above


def _rsyslogd() -> str:
    path = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if os.access("/usr/sbin/rsyslogd", os.X_OK) else None
    )
    _need(path is not None, "rsyslogd (package rsyslog)")
    assert path is not None
    gtls = glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") + glob.glob(
        "/usr/lib/rsyslog/lmnsd_gtls.so"
    )
    _need(bool(gtls), "rsyslog's TLS driver (package rsyslog-gnutls)")
    return path


def _wait_for_file(
    path: Path, proc: subprocess.Popen[bytes], condition: Callable[[str], bool]
) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited with {proc.returncode}")
        text = path.read_text(errors="replace") if path.exists() else ""
        if condition(text):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{path} not as expected in {WAIT}s")


@dataclass
class Rsyslog:
    proc: subprocess.Popen[bytes]
    received: Path

    def wait_for(self, condition: Callable[[str], bool]) -> list[SyslogMessage]:
        """Wait until the received file satisfies ``condition``; its messages, parsed."""
        text = _wait_for_file(self.received, self.proc, condition)
        return [parse_message(line.encode()) for line in text.splitlines() if line]


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[tuple[ConclaveServer, Rsyslog]]:
    """A deployment pointed at a fresh rsyslogd (started; the server is not)."""
    rsyslogd = _rsyslogd()
    server = ConclaveServer(tmp_path / "data", transports="tls,udp").init()
    home = tmp_path / "rsyslog"
    (home / "work").mkdir(parents=True)
    out, port_file = home / "received.log", home / "port"
    (home / "rsyslog.conf").write_text(
        CONFIG.format(
            work=home / "work",
            ca=server.ca,
            # rsyslog must present a certificate from the deployment's CA that
            # names 127.0.0.1: the server's own does.
            cert=server.data_dir / "tls" / "server.crt",
            key=server.data_dir / "tls" / "server.key",
            port_file=port_file,
            out=out,
        )
    )
    proc = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(home / "rsyslog.conf"), "-i", str(home / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = int(_wait_for_file(port_file, proc, lambda t: t.strip().isdigit()).strip())
        patch(server, {"logging": {"controller": f"127.0.0.1:{port}", "controller_acks": False}})
        yield server, Rsyslog(proc, out)
    finally:
        server.stop()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_rsyslog_receives_conclave_events(rsyslog: tuple[ConclaveServer, Rsyslog]) -> None:
    server, receiver = rsyslog
    server.start()
    server.wait_for(lambda e: e.get("event") == "log controller connected")
    client = SipClient("udp", server.ports["udp"])
    first = client.send("REGISTER", REG_URI, from_user="mallory", call_id="rs-call-1")
    auth = digest_header(
        first, user="mallory", password="guessed-wrong-1", method="REGISTER", uri=REG_URI
    )
    again = client.send(
        "REGISTER", REG_URI, from_user="mallory", headers=[auth], call_id="rs-call-1"
    )
    assert again.status == 401
    messages = receiver.wait_for(lambda t: "authentication_failed" in t)
    assert {m.app_name for m in messages} == {"conclave"}
    ready = next(m for m in messages if m.msgid == "ready")
    assert (ready.hostname, ready.facility, ready.severity) == ("127.0.0.1", 16, 6)
    assert ready.structured[SD_ID]["role"] == "standard"
    assert event_of(ready)["listeners"]  # the whole event travels as JSON in MSG
    failed = next(m for m in messages if m.msgid == "authentication_failed")
    assert failed.structured[SD_ID]["call_id"] == "rs-call-1"
    assert event_of(failed)["source"] == "127.0.0.1"
    # A graceful stop delivers its last events before the process exits.
    assert server.stop() == 0
    stopped = receiver.wait_for(lambda t: '"event":"stopped"' in t)
    assert stopped[-1].msgid == "stopped"
