"""Media relay credentials against a real relay: Debian's coturn and its test client.

A Conclave server with ``[media_relay]`` on hands alice credentials over SIP
(Lync's SERVICE request); coturn, configured by ``conclave topology publish``'s
writer for an edge whose external address is this machine's loopback, allocates
a relay for them (``turnutils_uclient`` sends media through it to
``turnutils_peer``). Forged and expired credentials are refused.

The only changes to the published configuration are the test's own: ports on
loopback, logging to stdout, and ``allow-loopback-peers`` (the peer here is on
loopback, which the published file refuses).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conclave.services.relay import CONTENT_TYPE, NAMESPACE, relay_credentials
from conclave.topology.document import topology_from_mapping
from conclave.topology.relay import turnserver_conf
from tests.topology.helpers import base, with_edge

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import SipClient, digest_header
from .test_im import signed_in

DEADLINE = 15.0
BODY = (
    f'<request xmlns="{NAMESPACE}" requestID="1" version="1.0" from="sip:alice@localhost" '
    'to="sip:alice@localhost"><credentialsRequest credentialsRequestID="7">'
    "<identity>sip:alice@localhost</identity><location>internet</location>"
    "<duration>480</duration></credentialsRequest></request>"
).encode()


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{', '.join(missing)} missing (scripts/install-peers.sh installs coturn)")
        pytest.skip(f"{', '.join(missing)} not installed")  # outside CI only


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def udp_bound(port: int) -> bool:
    rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(r.split()[1].endswith(f":{port:04X}") for r in rows)


def ask_for_credentials(client: SipClient, body: bytes = BODY) -> ET.Element:
    uri = "sip:alice@localhost"
    headers = [f"Content-Type: {CONTENT_TYPE}"]
    first = client.send("SERVICE", uri, from_user="alice", headers=headers, body=body)
    assert first.status == 407, first
    auth = digest_header(first, user="alice", password=PASSWORDS["alice"], method="SERVICE",
                         uri=uri)  # fmt: skip
    final = client.send("SERVICE", uri, from_user="alice", headers=[*headers, auth], body=body)
    assert final.status == 200, final
    assert final.headers.get("Content-Type") == CONTENT_TYPE
    return ET.fromstring(final.body)


@pytest.fixture
def relay(make_server: Callable[..., ConclaveServer], tmp_path: Path) -> Iterator[
    tuple[ConclaveServer, int, str]
]:  # fmt: skip
    _require("turnserver", "turnutils_uclient", "turnutils_peer")
    port = free_udp_port()
    server = make_server(
        transports="tls",
        config={"media_relay": {"enabled": True, "servers": [f"127.0.0.1:{port}"]}},
    )
    secret = (server.data_dir / "relay.secret").read_text().strip()
    doc = with_edge(base())
    doc["pools"]["edge"]["members"][0]["edge"]["external"]["address"] = "127.0.0.1"
    doc["pools"]["edge"]["members"][0]["ports"] = {"turn": port}
    topology = topology_from_mapping(doc)
    [edge] = [r for r in topology.hosts() if "edge" in r.host.roles]
    conf = tmp_path / "turnserver.conf"
    conf.write_text(
        turnserver_conf(topology, edge, secret)
        + "log-file=stdout\nsimple-log\nallow-loopback-peers\nmin-port=50200\nmax-port=50400\n"
        + f"pidfile={tmp_path / 'turnserver.pid'}\n"
    )
    log = (tmp_path / "turnserver.log").open("wb")
    proc = subprocess.Popen(["turnserver", "-c", str(conf)], stdout=log, stderr=log)
    deadline = time.monotonic() + DEADLINE
    while not udp_bound(port):
        assert proc.poll() is None, (tmp_path / "turnserver.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "coturn did not bind"
        time.sleep(0.05)
    yield server, port, secret
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def allocate(
    port: int, username: str, password: str, peer_address: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    """One TURN client session through the relay to a peer (bounded in time)."""
    peer_port = free_udp_port()
    peer = subprocess.Popen(["turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        return subprocess.run(
            ["turnutils_uclient", "-p", str(port), "-u", username, "-w", password,
             "-e", peer_address, "-r", str(peer_port), "-n", "3", "-m", "1", "127.0.0.1"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        peer.terminate()
        peer.wait(timeout=10)


def test_issued_credentials_open_a_relay_and_forged_or_expired_ones_do_not(
    relay: tuple[ConclaveServer, int, str],
) -> None:
    server, port, secret = relay
    alice = signed_in(server, "alice")
    answer = ask_for_credentials(alice)
    ns = {"m": NAMESPACE}
    username = answer.findtext("m:credentialsResponse/m:credentials/m:username", namespaces=ns)
    password = answer.findtext("m:credentialsResponse/m:credentials/m:password", namespaces=ns)
    assert username is not None and password is not None
    assert username.endswith(":alice") and int(username.split(":")[0]) > time.time() + 3600
    host = answer.findtext("m:credentialsResponse/m:mediaRelayList/m:mediaRelay/m:hostName",
                           namespaces=ns)  # fmt: skip
    assert host == "127.0.0.1"

    issued = allocate(port, username, password)
    assert issued.returncode == 0, issued.stdout[-1500:]
    assert "Total lost packets 0" in issued.stdout

    # The relay is no way into private networks (the published denied-peer-ip ranges).
    inward = allocate(port, username, password, peer_address="10.1.2.3")
    assert inward.returncode != 0 and "Forbidden IP" in inward.stdout

    forged = allocate(port, username, "bm90IHRoZSByaWdodCBwYXNzd29yZA==")
    assert forged.returncode != 0 and "Cannot complete Allocation" in forged.stdout
    stretched = allocate(port, f"{int(time.time()) + 86_400 * 365}:alice", password)
    assert stretched.returncode != 0  # the expiry is inside what is signed

    expired = relay_credentials(secret.encode(), "alice", time.time() - 120, 60)
    late = allocate(port, expired.username, expired.password)
    assert late.returncode != 0 and "Cannot complete Allocation" in late.stdout
