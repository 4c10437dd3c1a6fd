"""Dialogs routed through this server, and what an in-dialog request must prove.

When the proxy forwards a request that can create a dialog (INVITE,
SUBSCRIBE, REFER) it opens a :class:`RoutedDialog` for that branch and puts
the dialog's id in its Record-Route entries. The id is 128 random bits: it
means nothing to anyone but this process, and it cannot be guessed. What it
is bound to lives here, not in the token:

* the dialog: its Call-ID, the caller's tag, and each callee tag this server
  saw come back on the branch (a provisional or 2xx response to the request,
  RFC 3261 §12.1);
* the two parties: the caller's authenticated address of record and the
  callee's (the request's To), and the flow each of them used;
* a lifetime: :data:`EARLY_LIFETIME` until a 2xx establishes it, then
  :data:`IDLE_LIFETIME` after its last request; a BYE ends it.

An in-dialog request that names a dialog by its Route token is accepted
(:meth:`DialogTable.check`) only when its Call-ID and tags are the dialog's,
its From and To are the two parties in one order or the other, and it arrives
on the flow of the party its From names. On any other flow the router must
authenticate the sender as that party first (:attr:`Hop.on_party_flow`), and
the party's flow moves to where it authenticated. The request goes to the
other party's recorded flow and nowhere else: there is no fallback to a
registered contact, so a dead flow is answered 430 (RFC 5626 §5.3) by the
router.

Nothing here reads a clock: callers pass ``now``.
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from conclave.sip.flow import Flow
from conclave.sip.message import Request, Response

EARLY_LIFETIME = 300.0
"""Seconds a dialog lives before a 2xx establishes it, renewed by each
provisional response. More than Timer C (180 s, RFC 3261 §16.8), after which
the proxy cancels a ringing branch anyway."""

IDLE_LIFETIME = 24 * 3600.0
"""Seconds an established dialog lives after its last request through us. A
BYE ends it at once; this bounds the dialogs whose BYE never came (a client
that crashed). A call or subscription that stays silent for a day (no
re-INVITE, UPDATE, session-timer refresh or SUBSCRIBE refresh) is longer than
any UC client keeps one."""

MAX_DIALOGS = 200_000
"""Most dialogs held at once, about 1 KiB each: a busy Front End's calls and
proxied subscriptions with room to spare. Beyond it the least recently used
one is forgotten (its next request gets 481), so memory stays bounded."""

MAX_DIALOGS_PER_USER = 1_000
"""Most dialogs one user may have open through us. A client keeps a handful;
more means a runaway or hostile client, whose new dialogs get 503 rather than
pushing other users' dialogs out of the table."""

TOKEN_BYTES = 16
"""Random bytes in a dialog id: 128 bits, unguessable."""

DIALOG_ID_LENGTH = 22
"""Characters in a dialog id: ``TOKEN_BYTES`` in base64url without padding."""


class Side(Enum):
    CALLER = "caller"
    CALLEE = "callee"


@dataclass(eq=False, slots=True)
class Party:
    """One end of a dialog: who it is and the flow it speaks on."""

    aor: str
    flow: Flow


@dataclass(eq=False, slots=True)
class RoutedDialog:
    """A dialog (or, before a 2xx, a dialog attempt on one branch) routed via us."""

    id: str
    call_id: str
    caller_tag: str
    caller: Party
    callee: Party
    owner: str
    """The authenticated user who opened it (for :data:`MAX_DIALOGS_PER_USER`)."""
    callee_tags: set[str] = field(default_factory=set)
    established: bool = False
    expires: float = 0.0

    def party(self, side: Side) -> Party:
        return self.caller if side is Side.CALLER else self.callee

    def other(self, side: Side) -> Party:
        return self.callee if side is Side.CALLER else self.caller


@dataclass(frozen=True, slots=True)
class Hop:
    """An in-dialog request that matches its dialog: who sent it, where it goes."""

    dialog: RoutedDialog
    side: Side
    """The sender's side."""
    on_party_flow: bool
    """True when it arrived on the sender's recorded flow. False: the router
    must authenticate the sender as :attr:`sender` before relaying it."""

    @property
    def sender(self) -> Party:
        return self.dialog.party(self.side)

    @property
    def toward(self) -> Flow:
        """The other party's flow: the only place the request may go."""
        return self.dialog.other(self.side).flow


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer given instead of handling a request: a request that does not
    belong to the dialog its token names, or one a feature's hook refused."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


NO_SUCH_DIALOG = Refusal(481, "Call/Transaction Does Not Exist")
NOT_THIS_DIALOG = Refusal(403, "Route does not belong to this dialog")
WRONG_PARTIES = Refusal(403, "From and To do not match the dialog")


def _new_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(TOKEN_BYTES)).rstrip(b"=").decode("ascii")


class DialogTable:
    """Every dialog routed through this process, bounded in number and time."""

    def __init__(
        self,
        *,
        max_dialogs: int = MAX_DIALOGS,
        max_per_user: int = MAX_DIALOGS_PER_USER,
    ) -> None:
        self.max_dialogs = max_dialogs
        self.max_per_user = max_per_user
        # Two queues, each with one lifetime, so each is ordered by expiry and
        # expired dialogs are swept from the front.
        self._early: OrderedDict[str, RoutedDialog] = OrderedDict()
        self._established: OrderedDict[str, RoutedDialog] = OrderedDict()
        self._per_user: dict[str, int] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._early) + len(self._established)

    def get(self, token: str, now: float) -> RoutedDialog | None:
        """The live dialog ``token`` names, or None."""
        dialog = self._early.get(token) or self._established.get(token)
        if dialog is None or dialog.expires <= now:
            return None
        return dialog

    # -- opening and following responses ----------------------------------------------
    def can_open(self, owner: str) -> bool:
        """False when ``owner`` already has :data:`MAX_DIALOGS_PER_USER` open."""
        return self._per_user.get(owner, 0) < self.max_per_user

    def open(
        self,
        request: Request,
        *,
        owner: str,
        caller_flow: Flow,
        callee_flow: Flow,
        now: float,
    ) -> RoutedDialog | None:
        """A dialog attempt for one branch of ``request`` (already authenticated
        as ``owner``, its From user). None when the request has no From tag or
        no usable From/To (nothing could ever match it)."""
        caller_aor = request.from_aor
        callee_aor = request.to_aor
        caller_tag = request.from_tag
        call_id = request.call_id
        if caller_aor is None or callee_aor is None or not caller_tag or not call_id:
            return None
        self.sweep(now)
        while len(self) >= self.max_dialogs:
            self._evict_one()
        dialog = RoutedDialog(
            id=_new_id(),
            call_id=call_id,
            caller_tag=caller_tag,
            caller=Party(caller_aor, caller_flow),
            callee=Party(callee_aor, callee_flow),
            owner=owner,
            expires=now + EARLY_LIFETIME,
        )
        self._early[dialog.id] = dialog
        self._per_user[owner] = self._per_user.get(owner, 0) + 1
        return dialog

    def on_response(self, dialog: RoutedDialog, response: Response, now: float) -> None:
        """A response on the branch that ``dialog`` was opened for (§12.1)."""
        status = response.status
        if status >= 300:
            if not dialog.established:
                self.close(dialog)
            return
        tag = response.to_tag
        if status < 200:
            if tag and not dialog.established:
                dialog.callee_tags.add(tag)
                dialog.expires = now + EARLY_LIFETIME
                self._early.move_to_end(dialog.id)
            return
        if tag:
            dialog.callee_tags.add(tag)
        if not dialog.callee_tags:
            return  # a 2xx without a To tag cannot be followed (§12.1.2 requires one)
        if not dialog.established and self._early.pop(dialog.id, None) is not None:
            dialog.established = True
            self._established[dialog.id] = dialog
        self.touch(dialog, now)

    # -- in-dialog requests ------------------------------------------------------------
    def check(self, token: str, request: Request, flow: Flow, now: float) -> Hop | Refusal:
        """Does ``request``, arriving on ``flow``, belong to the dialog ``token`` names?"""
        dialog = self.get(token, now)
        if dialog is None:
            return NO_SUCH_DIALOG
        if request.call_id != dialog.call_id:
            return NOT_THIS_DIALOG
        from_tag = request.from_tag
        to_tag = request.to_tag
        if from_tag == dialog.caller_tag:
            side = Side.CALLER
            if to_tag not in dialog.callee_tags:
                return NO_SUCH_DIALOG
        elif to_tag == dialog.caller_tag and from_tag:
            side = Side.CALLEE
            if from_tag not in dialog.callee_tags:
                # A NOTIFY may come before the 2xx to its SUBSCRIBE (RFC 6665
                # §4.1.2.4), and only the callee's own flow can say so.
                if flow != dialog.callee.flow or dialog.established:
                    return NO_SUCH_DIALOG
                dialog.callee_tags.add(from_tag)
        else:
            return NOT_THIS_DIALOG
        sender, receiver = dialog.party(side), dialog.other(side)
        if request.from_aor != sender.aor or request.to_aor != receiver.aor:
            return WRONG_PARTIES
        return Hop(dialog, side, on_party_flow=flow == sender.flow)

    def moved(self, hop: Hop, flow: Flow) -> None:
        """The sender authenticated as its party on ``flow``: requests to it go there now."""
        hop.sender.flow = flow

    def touch(self, dialog: RoutedDialog, now: float) -> None:
        """A request passed along an established dialog: it lives on."""
        if dialog.established and dialog.id in self._established:
            dialog.expires = now + IDLE_LIFETIME
            self._established.move_to_end(dialog.id)

    def end(self, hop: Hop, request: Request) -> None:
        """A BYE: the dialog it names is over (§15). Other forks of the same
        INVITE (other callee tags) stay."""
        dialog = hop.dialog
        to_tag, from_tag = request.to_tag, request.from_tag
        callee_tag = to_tag if hop.side is Side.CALLER else from_tag
        dialog.callee_tags.discard(callee_tag or "")
        if not dialog.callee_tags:
            self.close(dialog)

    def close(self, dialog: RoutedDialog) -> None:
        if (
            self._early.pop(dialog.id, None) is None
            and self._established.pop(dialog.id, None) is None
        ):
            return
        left = self._per_user.get(dialog.owner, 1) - 1
        if left > 0:
            self._per_user[dialog.owner] = left
        else:
            self._per_user.pop(dialog.owner, None)

    # -- stray responses ---------------------------------------------------------------
    def for_stray_2xx(self, token: str, response: Response, flow: Flow, now: float) -> Flow | None:
        """Where a 2xx to INVITE that matched no transaction (a late fork, RFC
        6026) may go: the dialog is named by the id in our Via branch, and the
        response must carry that dialog's Call-ID and tags and come on one
        party's recorded flow. The answer is the other party's flow; None:
        drop it."""
        dialog = self.get(token, now)
        if dialog is None or dialog.call_id != response.call_id:
            return None
        from_tag, to_tag = response.from_tag, response.to_tag
        if flow == dialog.callee.flow and from_tag == dialog.caller_tag and to_tag:
            self.on_response(dialog, response, now)  # a new fork's tag is followed too
            return dialog.caller.flow
        if (
            flow == dialog.caller.flow
            and to_tag == dialog.caller_tag
            and from_tag in dialog.callee_tags
        ):
            self.touch(dialog, now)
            return dialog.callee.flow
        return None

    # -- bounds ------------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        """Forget dialogs whose lifetime ran out (each queue is in expiry order)."""
        for queue in (self._early, self._established):
            while queue:
                dialog = next(iter(queue.values()))
                if dialog.expires > now:
                    break
                self.close(dialog)

    def _evict_one(self) -> None:
        queue = self._early or self._established
        self.close(next(iter(queue.values())))
        self.evicted += 1
