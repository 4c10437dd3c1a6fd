"""Real clients see each other's presence through Conclave over TLS (baresip 1.0).

bob publishes (baresip's presence module, ``pubint``); alice has bob as a
presence contact and subscribes through the server. bob goes offline and
online again with the ``presence_*`` commands; alice's baresip shows each
change (it prints "<uri> changed status from X to Y", read by the harness).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import PASSWORDS
from .peers import Baresip
from .server import ConclaveServer

pytestmark = pytest.mark.peers

DOMAIN = "localhost"
CONFIG = {
    "presence": {"min_expires": 1, "notify_merge_window": "0ms"},
    "auth": {"algorithms": ["MD5"]},  # baresip 1.0's digest is MD5 only
}


def test_baresip_watcher_sees_baresip_publisher_change(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config=CONFIG)
    outbound = f"sip:127.0.0.1:{server.ports['tls']}"
    bob_uri = f"sip:bob@{DOMAIN}"
    with Baresip(
        bob_uri,
        password=PASSWORDS["bob"],
        outbound=outbound,
        transport="tls",
        ca_file=server.ca,
        publish=True,
        name="bob",
    ) as bob:
        bob.wait_registered()
        server.wait_for(lambda e: e.get("event") == "presence loaded")
        with Baresip(
            f"sip:alice@{DOMAIN}",
            password=PASSWORDS["alice"],
            outbound=outbound,
            transport="tls",
            ca_file=server.ca,
            presence_contacts=[bob_uri],
            name="alice",
        ) as alice:
            alice.wait_registered()
            alice.wait_presence(bob_uri, "online", timeout=20)
            bob.set_presence("offline")
            alice.wait_presence(bob_uri, "offline", timeout=20)
            bob.set_presence("online")
            alice.wait_presence(bob_uri, "online", timeout=20)
