"""What the Edge remembers: flow tokens for remote users and the dialogs it hides.

**Flow tokens** (RFC 5626 §5.2 style). A remote user's REGISTER leaves the
Edge with ``Path: <sip:TOKEN@edge-internal;lr;ob>``; the Front End sends every
request for that user back with that Route, and the token names the
connection the user signed in on. A token is the connection id and an
HMAC-SHA256 of it under a key made at start-up: the Edge sends a request
only on a connection it can prove it named itself, never to an address a
message names, and a token from an earlier run (or a forged one) names
nothing (RFC 5626 §5.3: 430 Flow Failed when its connection is gone).

**Hidden dialogs.** A dialog that crosses the Edge is known outside by one
random id only: the Edge's Record-Route and Contact there are
``sip:ID@edge-external``. Inside, the id maps to what the Edge hides: the
internal route set, the internal party's Contact, and the outside connection
the dialog is bound to (an in-dialog request from outside must arrive on it).
Dialogs end with their BYE, when their outside connection closes, or after
:data:`DIALOG_IDLE` without a request; at most :data:`MAX_DIALOGS` live.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from conclave.sip.flow import Flow

TOKEN_MAC_BYTES = 10
"""80 bits of HMAC: a token cannot be guessed in any number of tries a flood can make."""
DIALOG_ID_BYTES = 16
"""128 random bits per hidden dialog id."""
DIALOG_IDLE = 12 * 3600.0
"""A hidden dialog with no request for this long is forgotten (a call that was
dropped without a BYE); sessions refresh long before (RFC 4028 defaults to 30 min)."""
MAX_DIALOGS = 100_000
"""Hidden dialogs kept; past it the least recently used is forgotten, so a
flood of INVITEs cannot grow the Edge without bound."""
MAX_FLOWS = 100_000
"""Remote connections whose token is valid at once (the transport's own
connection limit is lower; this only bounds the table)."""


class FlowTokens:
    """Tokens that name outside connections (see the module docstring)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)
        self._flows: OrderedDict[int, Flow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    def _mac(self, conn_id: int) -> str:
        digest = hmac.new(self._key, str(conn_id).encode(), hashlib.sha256).digest()
        return digest[:TOKEN_MAC_BYTES].hex()

    def token(self, flow: Flow) -> str:
        """The token for ``flow`` (a stream connection), remembered until it closes."""
        self._flows[flow.conn_id] = flow
        self._flows.move_to_end(flow.conn_id)
        while len(self._flows) > MAX_FLOWS:
            self._flows.popitem(last=False)
        return f"{flow.conn_id:x}-{self._mac(flow.conn_id)}"

    def flow(self, token: str) -> Flow | None:
        """The connection ``token`` names, or None: forged, from another run, or closed."""
        number, _, mac = token.partition("-")
        try:
            conn_id = int(number, 16)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(conn_id)):
            return None
        return self._flows.get(conn_id)

    def forget(self, flow: Flow) -> None:
        self._flows.pop(flow.conn_id, None)


@dataclass(eq=False)
class HiddenDialog:
    """One dialog through the Edge, as the Edge hides it."""

    id: str
    outside: Flow | None
    """The remote party's connection: a remote user's in-dialog requests must use it
    (None until the connection to a partner is made)."""
    call_id: str
    partner: str | None = None
    """For a dialog with a federated partner: its domain. Its requests may come on any
    connection authenticated as that partner."""
    inward_route: tuple[str, ...] = ()
    """Route entries for requests from outside toward the internal party."""
    inside_contact: str | None = None
    """The internal party's Contact URI, which outside sees as ``sip:ID@edge``."""
    inside_record_route: tuple[str, ...] = ()
    """For a dialog an internal party started: the Record-Route it arrived with."""
    outward_route: tuple[str, ...] = ()
    """Route entries for requests from inside toward the outside party: a partner's
    own hidden Record-Route (empty for a remote user's client)."""
    outside_record_route: tuple[str, ...] = ()
    """For a dialog the outside party started: the Record-Route it arrived with."""
    reach: str | None = None
    """How the outside party reaches the Edge (``host:port`` from the Route it used), for
    the URIs it is given: a client without DNS for the Edge's name reuses its connection."""
    established: bool = False
    last_used: float = 0.0
    ending: bool = field(default=False)


class HiddenDialogs:
    """The Edge's dialog table, least recently used first."""

    def __init__(self) -> None:
        self._dialogs: OrderedDict[str, HiddenDialog] = OrderedDict()

    def __len__(self) -> int:
        return len(self._dialogs)

    def open(
        self, outside: Flow | None, call_id: str, now: float, partner: str | None = None
    ) -> HiddenDialog:
        self.expire(now)
        dialog = HiddenDialog(
            secrets.token_hex(DIALOG_ID_BYTES), outside, call_id, partner=partner, last_used=now
        )
        self._dialogs[dialog.id] = dialog
        while len(self._dialogs) > MAX_DIALOGS:
            self._dialogs.popitem(last=False)
        return dialog

    def get(self, dialog_id: str, now: float) -> HiddenDialog | None:
        dialog = self._dialogs.get(dialog_id)
        if dialog is None:
            return None
        if now - dialog.last_used > DIALOG_IDLE:
            del self._dialogs[dialog_id]
            return None
        dialog.last_used = now
        self._dialogs.move_to_end(dialog_id)
        return dialog

    def end(self, dialog: HiddenDialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def flow_closed(self, flow: Flow) -> int:
        """Forget every dialog bound to ``flow``; how many."""
        gone = [d for d in self._dialogs.values() if d.outside == flow and d.partner is None]
        for dialog in gone:
            del self._dialogs[dialog.id]
        return len(gone)

    def expire(self, now: float) -> None:
        while self._dialogs:
            oldest = next(iter(self._dialogs.values()))
            if now - oldest.last_used <= DIALOG_IDLE:
                return
            self._dialogs.popitem(last=False)
