"""Finished work leaves no reference cycles (the server runs with automatic full
collections off: conclave.ops.gcpause). A cycle per request is promoted out of
the young generations while its transactions live, then waits for the
ten-minute full collection: under load that is memory growing by megabytes a
second, which the overload benchmark (issue 14, scenario 7) showed."""

from __future__ import annotations

import gc

from .conftest import Converse
from .network import NOTHING_LEFT, Core, established_call


def test_a_relayed_message_leaves_no_cycles(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        gc.collect()
        gc.disable()
        try:
            for n in range(20):
                alice.send_signed(alice.message("bob", f"message {n}"))
                bob.answer(bob.expect_request("MESSAGE"), 200)
                alice.expect_response(200)
            core.quiet()
            assert core.leaks() == NOTHING_LEFT
            assert gc.collect() == 0, "finished requests left reference cycles"
        finally:
            gc.enable()

    converse(script)


def test_a_call_leaves_no_cycles(converse: Converse) -> None:
    async def script(core: Core) -> None:
        alice, bob = core.agent("alice"), core.agent("bob")
        alice.sign_in()
        bob.sign_in()
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                _, _, dialog = established_call(alice, bob)
                alice.send(alice.in_dialog(dialog, "BYE"))
                bob.answer(bob.expect_request("BYE"), 200)
                alice.expect_response(200)
            core.quiet()
            assert gc.collect() == 0, "finished calls left reference cycles"
        finally:
            gc.enable()

    converse(script)
