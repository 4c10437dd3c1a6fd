"""Fresh identifiers the protocol needs: branches and tags.

The core never reads hidden randomness: callers that want determinism (tests)
pass their own ``random``; the default is the operating system's CSPRNG,
because a branch or tag that can be predicted lets an off-path attacker forge
responses or in-dialog requests.
"""

from __future__ import annotations

import os
from collections.abc import Callable

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: every branch created by an RFC 3261 element starts so."""

BRANCH_RANDOM_BYTES = 12
"""96 random bits after the cookie: unique across the network, unguessable."""

TAG_RANDOM_BYTES = 8
"""64 random bits in a From/To tag (§19.3 asks for at least 32)."""


def new_branch(random: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh branch for a new client transaction (§8.1.1.7)."""
    return MAGIC_COOKIE + random(BRANCH_RANDOM_BYTES).hex()


def new_tag(random: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh From or To tag (§19.3)."""
    return random(TAG_RANDOM_BYTES).hex()
