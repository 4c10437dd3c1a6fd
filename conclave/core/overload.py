"""Overload control: answer what cannot be served in time, early and cheaply.

A server that takes in more than it can serve builds a queue, and over UDP
the queue is the kernel's receive buffer: every request then waits longer,
clients retransmit (adding load), and the table fills. Conclave measures the
queue where it forms: each UDP datagram carries the kernel's receive time
(``SO_TIMESTAMPNS``), so the stack knows how long it waited before being
read. Work that waited too long is answered ``503 Service Unavailable`` with
``Retry-After`` (RFC 3261 §21.5.4) before it is parsed, by
:func:`~conclave.sip.parser.salvage_error_response` over the raw bytes: a
few microseconds instead of the hundreds a request costs to serve, so the
server keeps serving what it admits at close to its full rate.

What waits longest before being refused:

* responses, ACKs and CANCELs are always admitted: they finish work already
  taken on (and an ACK or CANCEL cannot be answered with a 503);
* REGISTER, requests inside a dialog and requests that answer our
  challenge (they carry credentials) are admitted up to
  :data:`PRIORITY_DELAY`: a refresh keeps a user reachable, an in-dialog
  request belongs to a call already set up, and an answered challenge is
  the second half of work already begun (refusing it would waste the
  first: a MESSAGE costs a challenge, then the MESSAGE itself);
* new work (an INVITE, a MESSAGE, a SUBSCRIBE out of dialog) up to
  :data:`NEW_WORK_DELAY`, and only up to :data:`BUSY_NEW_WORK_DELAY` while
  the server is refusing work: then its capacity goes to what was begun.

Streams (TCP, TLS) report no queueing time: their backlog stays in the
kernel's socket buffers and TCP flow control slows the sender down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.parser import peek_kind, salvage_error_response

NEW_WORK_DELAY: Final = 0.1
"""Seconds a new out-of-dialog request may have waited in the kernel and
still be served. With the service time on top, an admitted request is
answered well inside the 200 ms a UC client expects, and long before its
first retransmission (T1 = 500 ms)."""

PRIORITY_DELAY: Final = 0.2
"""The same for REGISTER and in-dialog requests: twice the patience,
so under overload new work is refused first."""

BUSY_NEW_WORK_DELAY: Final = 0.02
"""While the server is refusing work (a refusal in the last :data:`BUSY_FOR`
seconds), new work without credentials may have waited only this long: the
capacity goes to the work already begun (answered challenges, dialogs,
refreshes), so what is admitted also completes. A new MESSAGE costs a
challenge first, and a challenge whose answer is then refused is wasted."""

BUSY_FOR: Final = 1.0
"""Seconds after a refusal during which the server counts as busy."""

PAUSE_DRAIN_FACTOR: Final = 4.0
"""After the process stood still for a known pause (a garbage collection) of P
seconds, waits are excused by up to P for this many times P afterwards: the
backlog the pause left is served at the spare capacity, which at 75% load
takes three times the pause. A pause is not overload; what persists after
its backlog drained is."""

RETRY_AFTER: Final = 2
"""Seconds a refused client is asked to wait (RFC 3261 §20.33): long enough
for a queue of :data:`PRIORITY_DELAY` to drain many times over."""

OVERLOADED = RemoteProtocolError(
    "Server overloaded", 503, headers=(("Retry-After", str(RETRY_AFTER)),)
)


@dataclass
class Admission:
    """Decides, from how long a message waited, whether to serve it."""

    new_work_delay: float = NEW_WORK_DELAY
    priority_delay: float = PRIORITY_DELAY
    busy_new_work_delay: float = BUSY_NEW_WORK_DELAY
    refused: int = 0
    """Requests answered 503 because they waited too long."""
    busy_until: float = 0.0
    excused: float = 0.0
    """Seconds of waiting a recent pause of the whole process accounts for."""
    excused_until: float = 0.0

    def paused(self, seconds: float, now: float) -> None:
        """The process stood still for ``seconds`` until monotonic time ``now``
        (a garbage collection): the queue that built up then is no overload."""
        self.excused = max(seconds, self.excused if now < self.excused_until else 0.0)
        self.excused_until = now + PAUSE_DRAIN_FACTOR * self.excused

    def refusal(self, data: bytes, queued: float, now: float) -> bytes | None:
        """None: serve ``data``, which waited ``queued`` seconds, at monotonic
        time ``now``. Else the 503 to send back instead (empty if nothing can
        be sent: the request is dropped)."""
        if now < self.excused_until:
            queued = max(0.0, queued - self.excused)
        busy = now < self.busy_until
        if queued <= (self.busy_new_work_delay if busy else self.new_work_delay):
            return None
        glance = peek_kind(data)
        if glance is None:
            return None  # not SIP at all: the parser will say so
        if glance.method in ("", "ACK", "CANCEL"):
            return None
        ongoing = glance.in_dialog or glance.credentials or glance.method == "REGISTER"
        if ongoing and queued <= self.priority_delay:
            return None
        self.refused += 1
        self.busy_until = now + BUSY_FOR
        return salvage_error_response(data, OVERLOADED) or b""
