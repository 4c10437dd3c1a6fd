"""Archiving against a real server: crash safety, tamper evidence, critical mode."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable

from .conftest import PASSWORDS
from .server import ConclaveServer, conclave
from .sipclient import SipClient, digest_header
from .test_im import send_im, signed_in

ARCHIVING = {
    "archive": {"enabled": True},
    # Every client is 127.0.0.1: let the stream through the per-source limits.
    "limits": {"requests_per_second": 100000, "burst": 100000},
}
URI = "sip:bob@localhost"


class Stream:
    """alice sends MESSAGEs to bob on one nonce with rising nonce-counts."""

    def __init__(self, alice: SipClient) -> None:
        self.alice = alice
        self.nc = 0
        first = alice.send(
            "MESSAGE", URI, from_user="alice", headers=["Content-Type: text/plain"], body=b"x"
        )
        assert first.status == 407, first
        self.challenge = first

    def send(self, call_id: str, body: bytes) -> None:
        self.nc += 1
        auth = digest_header(
            self.challenge, user="alice", password=PASSWORDS["alice"], method="MESSAGE",
            uri=URI, nc=self.nc,
        )  # fmt: skip
        self.alice.send_raw(
            self.alice.request(
                "MESSAGE",
                URI,
                from_user="alice",
                call_id=call_id,
                headers=["Content-Type: text/plain", auth],
                body=body,
            )
        )


def auto_answer(bob: SipClient, received: list[bytes]) -> threading.Thread:
    """bob answers every MESSAGE with 200 until his connection ends."""

    def loop() -> None:
        while True:
            try:
                request = bob.recv_request()
            except (OSError, ConnectionError, AssertionError):
                return
            received.append(request.body)
            bob.reply(request, 200)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def archived(server: ConclaveServer) -> list[dict[str, object]]:
    out = conclave("archive", "export", "--dir", str(server.data_dir), "--format", "jsonl")
    return [json.loads(line) for line in out.stdout.splitlines()]


def verify(server: ConclaveServer) -> tuple[int, str]:
    proc = conclave("archive", "verify", "--dir", str(server.data_dir), check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_every_acknowledged_message_survives_kill_9(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config=ARCHIVING)
    alice = signed_in(server, "alice")
    bob = signed_in(server, "bob")
    received: list[bytes] = []
    answering = auto_answer(bob, received)
    stream = Stream(alice)
    acknowledged: set[str] = set()
    burst = 25

    def collect(count: int) -> None:
        for _ in range(count):
            final = alice.final()
            if 200 <= final.status < 300:
                acknowledged.add(final.headers.get("Call-ID") or "")

    sent = 0
    for _round in range(3):
        for _ in range(burst):
            sent += 1
            stream.send(f"msg-{sent}", f"message {sent}".encode())
        collect(burst)
    assert len(acknowledged) == 3 * burst
    # A last burst in flight: kill -9 once a few of its answers are back.
    for _ in range(burst):
        sent += 1
        stream.send(f"msg-{sent}", f"message {sent}".encode())
    collect(5)
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(timeout=30)
    with contextlib.suppress(OSError, ConnectionError, AssertionError):
        collect(burst - 5)  # answers already on their way count too
    answering.join(timeout=15)

    code, output = verify(server)
    assert code == 0, output
    assert "archive OK" in output
    stored = {str(r["call_id"]) for r in archived(server)}
    missing = acknowledged - stored
    assert not missing, f"acknowledged but not archived: {sorted(missing)}"
    records = archived(server)
    assert all(r["sender"] == "sip:alice@localhost" for r in records)
    assert all(r["recipients"] == ["sip:bob@localhost"] for r in records)
    assert all(r["federated"] is False and r["conversation_id"] == r["call_id"] for r in records)


def test_tampering_is_named_by_verify(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=ARCHIVING)
    alice = signed_in(server, "alice")
    bob = signed_in(server, "bob")
    received: list[bytes] = []
    auto_answer(bob, received)
    stream = Stream(alice)
    for n in range(1, 6):
        stream.send(f"t-{n}", f"note {n}".encode())
        assert alice.final().status == 200
    assert server.stop() == 0
    assert verify(server)[0] == 0

    (segment,) = sorted((server.data_dir / "archive").glob("segment-*.jsonl"))
    original = segment.read_bytes()
    lines = original.splitlines(keepends=True)
    # Edit the third record's body.
    segment.write_bytes(b"".join([*lines[:2], lines[2].replace(b"note 3", b"note X"), *lines[3:]]))
    code, output = verify(server)
    assert code == 1 and "record 3" in output and "changed" in output, output
    # Delete the second record instead.
    segment.write_bytes(b"".join([lines[0], *lines[2:]]))
    code, output = verify(server)
    assert code == 1 and "record 2" in output and "missing" in output, output
    segment.write_bytes(original)
    assert verify(server)[0] == 0


def test_critical_mode_refuses_and_resumes_without_restart(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config=ARCHIVING)
    alice = signed_in(server, "alice")
    bob = signed_in(server, "bob")
    stream = Stream(alice)

    stream.send("c-1", b"before")
    first = bob.recv_request()
    assert first.body == b"before"
    bob.reply(first, 200)
    assert alice.final().status == 200

    # Make the archive unwritable: its directory becomes a file. (Tests run as
    # root, so permissions would not stop the server.)
    directory = server.data_dir / "archive"
    moved = server.data_dir / "archive.moved"
    os.rename(directory, moved)
    directory.write_text("not a directory\n")
    stream.send("c-2", b"while broken")
    refused = alice.final()
    assert refused.status == 503
    assert refused.reason == "Archive unavailable; message not delivered"
    assert refused.headers.get("Retry-After") == "10"
    server.wait_for(lambda e: e.get("event") == "archive unavailable")

    directory.unlink()
    os.rename(moved, directory)
    stream.send("c-3", b"after")
    # The refused message never reached bob: the next thing he gets is this one.
    delivered = bob.recv_request()
    assert delivered.body == b"after"
    bob.reply(delivered, 200)
    assert alice.final().status == 200
    server.wait_for(lambda e: e.get("event") == "archive available again; messages are delivered")

    bodies = [r["body"] for r in archived(server)]
    assert bodies == ["before", "after"]
    assert verify(server)[0] == 0


def test_archiving_off_by_default_writes_nothing(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server()
    alice = signed_in(server, "alice")
    bob = signed_in(server, "bob")
    Stream(alice).send("off-1", b"not archived")
    incoming = bob.recv_request()
    bob.reply(incoming, 200)
    assert alice.final().status == 200
    assert not (server.data_dir / "archive").exists()


def test_offline_and_in_dialog_messages_are_archived(
    make_server: Callable[..., ConclaveServer],
) -> None:
    from conclave.sip.address import parse_name_addr

    from .test_calls import answer, in_dialog, invite

    server = make_server(config=ARCHIVING)
    alice = signed_in(server, "alice")
    # carol is offline: her message is archived, then held (202).
    send_im(alice, "alice", "carol", b"for later", headers=["Conversation-ID: conv-42"])
    assert alice.final().status == 202

    bob = signed_in(server, "bob")
    invite(alice, "session-1")
    incoming = bob.recv_request()
    answer(bob, incoming, 200, "bobtag")
    ok = alice.final()
    target = str(parse_name_addr(ok.headers.get("Contact") or "").uri)
    dialog = {
        "from_hdr": ok.headers.get("From") or "",
        "to_hdr": ok.headers.get("To") or "",
        "call_id": "session-1",
    }
    alice.send_raw(in_dialog(alice, "ACK", ok, target, cseq=2, **dialog))
    assert bob.recv_request().method == "ACK"
    alice.send_raw(in_dialog(alice, "MESSAGE", ok, target, cseq=3, **dialog))
    message = bob.recv_request()
    assert message.method == "MESSAGE"
    bob.reply(message, 200)
    assert alice.final().status == 200

    records = archived(server)
    offline, session = records
    assert offline["recipients"] == ["sip:carol@localhost"]
    assert (offline["conversation_id"], offline["mode"], offline["body"]) == (
        "conv-42",
        "pager",
        "for later",
    )
    assert (session["call_id"], session["mode"]) == ("session-1", "session")
    assert session["recipients"] == ["sip:bob@localhost"]
    assert verify(server)[0] == 0
