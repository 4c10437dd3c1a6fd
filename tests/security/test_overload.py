"""A flood the server cannot keep up with: work that waited too long in the
receive queue is answered 503 with Retry-After at once, unparsed, and the
server serves normally as soon as the queue is short again (issue 14)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient


def test_requests_that_waited_too_long_get_503_then_service_resumes(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(transports="tls,udp")
    client = SipClient("udp", server.ports["udp"])
    assert server.proc is not None
    # Freeze the server so that what we send waits in its socket's receive
    # queue, as it would behind a flood, then let it run again.
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for n in range(20):
            client.send_raw(
                client.request(
                    "MESSAGE",
                    "sip:bob@localhost",
                    from_user="alice",
                    headers=["Content-Type: text/plain"],
                    body=f"queued {n}".encode(),
                )
            )
        time.sleep(0.5)  # the queue's age, not a wait for an event
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    answers = [client.recv() for _ in range(20)]
    assert {r.status for r in answers} == {503}
    assert all(r.headers.get("Retry-After") for r in answers)
    server.wait_for(
        lambda e: e.get("event") == "overloaded: refusing requests that waited too long"
    )
    # A fresh request is served as usual (challenged).
    fresh = client.send(
        "MESSAGE", "sip:bob@localhost", from_user="alice", headers=["Content-Type: text/plain"]
    )
    assert fresh.status == 407
