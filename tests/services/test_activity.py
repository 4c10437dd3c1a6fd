"""The activity log: one info line per message and per call, never a body.

Conversations run on the in-memory core (:mod:`tests.core.network`: the real
stack, router, proxy and features) with the activity feature among the
features, and the log lines are captured as structlog event dicts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from conclave import wiring
from conclave.services import activity
from tests.core.network import DOMAIN, Core, established_call, migrated_database, play

ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
SECRET = "the text of this message is nobody's business"
EVENTS = ("message", "call", "call ended")

Script = Callable[[Core], Awaitable[None]]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_database(tmp_path_factory.mktemp("activity-db"))


def test_the_server_runs_it() -> None:
    assert activity.build in wiring.FEATURES


@pytest.fixture
def converse(database: Path, tmp_path: Path) -> Callable[[Script], list[Any]]:
    """Run a script; return the activity lines it logged."""

    def run(script: Script) -> list[Any]:
        with capture_logs() as logs:
            play(database, tmp_path, script)
        assert SECRET not in repr(logs)  # no body, anywhere in the log
        return [
            {k: v for k, v in line.items() if k != "call_id"}
            for line in logs
            if line.get("event") in EVENTS
        ]

    return run


def test_the_feature_is_always_built() -> None:
    feature = activity.build(None)  # type: ignore[arg-type]  # needs nothing from setup
    assert isinstance(feature, activity.ActivityLog) and feature.name == "activity"


def test_messages_delivered_stored_and_refused(converse: Callable[[Script], list[Any]]) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        # Challenged first: not a message of anyone's yet, nothing logged.
        alice.send(alice.message("bob", SECRET))
        alice.expect_response(407)
        # Bob is offline: stored.
        alice.send_signed(alice.message("bob", SECRET))
        await core.settle()
        alice.expect_response(202)
        bob.sign_in()
        bob.answer(await bob.next_request("MESSAGE"), 200)  # the held one, from the server
        await core.settle()
        # Bob is online: delivered; then his device refuses one.
        alice.send_signed(alice.message("bob", SECRET))
        bob.answer(bob.expect_request("MESSAGE"), 200)
        alice.expect_response(200)
        alice.send_signed(alice.message("bob", SECRET))
        bob.answer(bob.expect_request("MESSAGE"), 486)
        alice.expect_response(486)

    lines = converse(script)
    assert lines == [
        {"event": "message", "from": ALICE, "to": BOB, "status": 202, "outcome": "stored",
         "log_level": "info"},
        {"event": "message", "from": ALICE, "to": BOB, "status": 200, "outcome": "delivered",
         "log_level": "info"},
        {"event": "message", "from": ALICE, "to": BOB, "status": 486, "outcome": "refused",
         "log_level": "info"},
    ]  # fmt: skip


def test_a_call_set_up_and_ended_and_one_that_failed(
    converse: Callable[[Script], list[Any]],
) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        _, _, dialog = established_call(alice, bob)
        alice.send(alice.in_dialog(dialog, "BYE"))
        bob.answer(bob.expect_request("BYE"), 200)
        alice.expect_response(200)

        busy = alice.send_signed(alice.invite("bob"))
        refused = bob.expect_request("INVITE")
        bob.answer(refused, 486)
        bob.expect_request("ACK")  # the proxy acknowledges bob's 486 hop by hop
        answer = alice.expect_response(486)
        alice.send(alice.ack(busy, answer))

    lines = converse(script)
    assert lines == [
        {"event": "call", "from": ALICE, "to": BOB, "status": 200, "outcome": "set up",
         "log_level": "info"},
        {"event": "call ended", "from": ALICE, "to": BOB, "status": 200, "log_level": "info"},
        {"event": "call", "from": ALICE, "to": BOB, "status": 486, "outcome": "failed",
         "log_level": "info"},
    ]  # fmt: skip


def test_every_line_names_its_call_id(database: Path, tmp_path: Path) -> None:
    sent: list[str] = []

    async def script(core: Core) -> None:
        alice = core.agent("alice")
        alice.sign_in()
        request = alice.send_signed(alice.message("bob", SECRET))
        sent.append(request.call_id or "")
        await core.settle()
        alice.expect_response(202)

    with capture_logs() as logs:
        play(database, tmp_path, script)
    (line,) = [e for e in logs if e.get("event") == "message"]
    assert line["call_id"] == sent[0]


def test_outcomes() -> None:
    assert [activity.message_outcome(s) for s in (200, 202, 204, 404, 480, 503)] == [
        "delivered", "stored", "delivered", "refused", "refused", "refused",
    ]  # fmt: skip
    assert [activity.call_outcome(s) for s in (200, 486, 487, 603)] == [
        "set up", "failed", "cancelled", "failed",
    ]  # fmt: skip
