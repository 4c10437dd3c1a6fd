"""Call detail records from a real server: a registration, a call and a MESSAGE."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from conclave.sip.address import parse_name_addr

from .server import ConclaveServer, conclave
from .test_calls import answer, in_dialog, invite
from .test_im import send_im, signed_in


def cdrs(server: ConclaveServer, *args: str) -> list[dict[str, Any]]:
    out = conclave("cdr", "list", "--json", "--dir", str(server.data_dir), *args)
    return list(json.loads(out.stdout))


def test_call_message_and_registration_produce_cdrs(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server()
    alice = signed_in(server, "alice")
    bob = signed_in(server, "bob")

    send_im(alice, "alice", "bob", b"lunch?")
    incoming = bob.recv_request()
    bob.reply(incoming, 200)
    assert alice.final().status == 200

    invite(alice, "cdr-call")
    ringing = bob.recv_request()
    answer(bob, ringing, 200, "bobtag")
    ok = alice.final()
    assert ok.status == 200
    target = str(parse_name_addr(ok.headers.get("Contact") or "").uri)
    dialog = {
        "from_hdr": ok.headers.get("From") or "",
        "to_hdr": ok.headers.get("To") or "",
        "call_id": "cdr-call",
    }
    alice.send_raw(in_dialog(alice, "ACK", ok, target, cseq=2, **dialog))
    assert bob.recv_request().method == "ACK"
    alice.send_raw(in_dialog(alice, "BYE", ok, target, cseq=3, **dialog))
    bye = bob.recv_request()
    bob.reply(bye, 200)
    assert alice.final().status == 200

    invite(alice, "cdr-declined")
    declined = bob.recv_request()
    answer(bob, declined, 486, "bobtag2")
    assert alice.final().status == 486

    # A graceful stop writes every queued CDR (a running server does so every second).
    assert server.stop() == 0

    records = cdrs(server)
    kinds = [r["kind"] for r in records]
    assert kinds.count("register") == 2 and kinds.count("im") == 1 and kinds.count("call") == 2
    registers = [r for r in records if r["kind"] == "register"]
    assert {r["caller"] for r in registers} == {"sip:alice@localhost", "sip:bob@localhost"}
    assert all(r["status"] == 200 and r["reason"] == "registered" for r in registers)

    (im,) = cdrs(server, "--kind", "im")
    assert (im["caller"], im["callee"], im["status"]) == (
        "sip:alice@localhost",
        "sip:bob@localhost",
        200,
    )
    assert im["reason"] == "delivered" and im["detail"]["bytes"] == len(b"lunch?")

    calls = {r["call_id"]: r for r in cdrs(server, "--kind", "call")}
    done = calls["cdr-call"]
    assert (done["caller"], done["callee"], done["status"]) == (
        "sip:alice@localhost",
        "sip:bob@localhost",
        200,
    )
    assert done["reason"] == "completed" and done["detail"]["ended_by"] == "caller"
    assert done["start"] <= done["answered"] <= done["end"] and done["duration"] >= 0
    busy = calls["cdr-declined"]
    assert (busy["status"], busy["reason"], busy["answered"]) == (486, "busy", None)

    assert [r["call_id"] for r in cdrs(server, "--user", "bob", "--kind", "call")] == [
        "cdr-call",
        "cdr-declined",
    ]
    shown = conclave("cdr", "show", "cdr-call", "--dir", str(server.data_dir))
    assert "completed" in shown.stdout
