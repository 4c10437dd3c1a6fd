"""Telling federated partners that a conversation is archived.

Lync's Edge could notify federated partners that their conversations with
an archived user are archived. Federation does not exist in Conclave yet;
when it does, the code that sends a request to a federated domain (or a
response to one) calls :func:`add_archiving_notice` with the archive
service's decision, before the message leaves the Edge.

The notice is one header, defined here because there is no standard one::

    Archiving: on; by=example.com

``by`` names our domain (the archiving party). A partner's client may show
"this conversation is archived by example.com". The header is removed from
every outgoing request first, so a local client cannot forge or suppress it.
"""

from __future__ import annotations

from conclave.sip.headers import Headers

ARCHIVING_HEADER = "Archiving"


def add_archiving_notice(headers: Headers, *, archived: bool, domain: str) -> None:
    """Set (archived) or remove (not archived) the notice on a federated message."""
    headers.remove(ARCHIVING_HEADER)
    if archived:
        headers.add(ARCHIVING_HEADER, f"on; by={domain}")


def archiving_notice(headers: Headers) -> str | None:
    """The archiving party's domain named by a notice we received, or None."""
    value = headers.get(ARCHIVING_HEADER)
    if value is None:
        return None
    state, _, params = value.partition(";")
    if state.strip().lower() != "on":
        return None
    for param in params.split(";"):
        key, _, val = param.strip().partition("=")
        if key.lower() == "by" and val:
            return val.strip()
    return ""
