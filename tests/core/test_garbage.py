"""Finished work leaves no reference cycles (the server runs with automatic full
collections off: conclave.ops.gcpause). A cycle per request is promoted out of
the young generations while its transactions live, then waits for the
ten-minute full collection: under load that is memory growing by megabytes a
second, which the overload benchmark (issue 14, scenario 7) showed."""

from __future__ import annotations

import gc
from collections.abc import Callable

from .conftest import Converse
from .network import NOTHING_LEFT, Core, established_call


def assert_no_cycles(core: Core, work: Callable[[], None], what: str) -> None:
    """Run ``work`` with the collector off; once the core is quiet, nothing it did
    may be left in a reference cycle."""
    gc.collect()
    gc.disable()
    try:
        work()
        core.quiet()
        assert core.leaks() == NOTHING_LEFT
        assert gc.collect() == 0, f"finished {what} left reference cycles"
    finally:
        gc.enable()


def test_a_relayed_message_leaves_no_cycles(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()

        def messages() -> None:
            for n in range(20):
                alice.send_signed(alice.message("bob", f"message {n}"))
                bob.answer(bob.expect_request("MESSAGE"), 200)
                alice.expect_response(200)

        assert_no_cycles(core, messages, "requests")

    converse(script)


def test_a_call_leaves_no_cycles(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()

        def calls() -> None:
            for _ in range(5):
                _, _, dialog = established_call(alice, bob)
                alice.send(alice.in_dialog(dialog, "BYE"))
                bob.answer(bob.expect_request("BYE"), 200)
                alice.expect_response(200)

        assert_no_cycles(core, calls, "calls")

    converse(script)
