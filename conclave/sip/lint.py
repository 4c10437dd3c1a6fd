"""Judge a raw SIP message the way a Conclave server judges it on receipt.

:func:`judge` parses ``data`` with datagram semantics and applies
:func:`conclave.sip.validate.check_request` (or ``check_response``). The
verdict is one of three kinds:

* ``ok``: well formed and acceptable;
* ``malformed``: it cannot be parsed, so a server answers 400 (or drops it);
* ``reject``: well formed but refused with a specific status (505, 416, 420,
  483, or 400 for a missing header).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import RemoteProtocolError
from .message import Request
from .parser import parse_message
from .validate import check_request, check_response

Kind = Literal["ok", "malformed", "reject"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    status: int | None = None
    reason: str = ""

    def describe(self) -> str:
        """The text after ``FILE: `` in ``conclave sip lint`` output."""
        if self.kind == "ok":
            return "ok"
        if self.kind == "malformed":
            return f"malformed: {self.reason}"
        return f"reject {self.status}: {self.reason}"


def judge(data: bytes, *, supported: frozenset[str] = frozenset()) -> Verdict:
    """Parse ``data`` as one datagram and apply the receipt checks."""
    try:
        msg = parse_message(data, datagram=True)
    except RemoteProtocolError as exc:
        return Verdict("malformed", exc.status, exc.reason)
    try:
        if isinstance(msg, Request):
            check_request(msg, supported=supported)
        else:
            check_response(msg)
    except RemoteProtocolError as exc:
        return Verdict("reject", exc.status, exc.reason)
    return Verdict("ok")
