"""Offline IM: a REGISTER costs a store query only for users with messages held."""

from __future__ import annotations

import asyncio
from typing import Any

from conclave.services.im import OfflineMessages
from conclave.sip.flow import Flow
from conclave.sip.uri import parse_uri


class FakeStore:
    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.taken: list[str] = []

    async def recipients(self) -> set[str]:
        return set(self.held)

    async def take_for(self, aor: str) -> list[Any]:
        self.taken.append(aor)
        return []

    async def enqueue(self, recipient: str, **_: Any) -> bool:
        self.held.add(recipient)
        return True


def contact(aor: str) -> Any:
    class C:
        flow = Flow("udp", ("127.0.0.1", 5062), ("127.0.0.1", 5060))
        uri = parse_uri("sip:x@127.0.0.1:5062")

    return C()


def test_only_recipients_with_held_messages_are_queried() -> None:
    async def go() -> list[str]:
        store = FakeStore({"sip:carol@example.test"})
        im = OfflineMessages(store, stack=None, via=lambda t, b: "")  # type: ignore[arg-type]
        await im.load()
        for aor in ("sip:alice@example.test", "sip:carol@example.test"):
            im.on_registered(aor, contact(aor))
        await asyncio.sleep(0)  # let the delivery task start
        await im.close()
        # Held later for someone: their next REGISTER looks again.
        from conclave.sip.headers import Headers
        from conclave.sip.message import Request

        await im.hold(
            Request("MESSAGE", parse_uri("sip:bob@example.test"), Headers()),
            "sip:bob@example.test",
            0.0,
        )
        im.on_registered("sip:bob@example.test", contact("sip:bob@example.test"))
        await asyncio.sleep(0)
        await im.close()
        return store.taken

    assert asyncio.run(go()) == ["sip:carol@example.test", "sip:bob@example.test"]
