"""Archive records: their fields, canonical bytes and hash chain.

Every record is one JSON object. Its **canonical bytes** are the object
without its ``hash`` field, serialised with sorted keys, no insignificant
whitespace and UTF-8 (``ensure_ascii=False``). Its ``hash`` is the SHA-256
of those bytes, and its ``prev`` is the previous record's ``hash`` (64 zeros
for the first record ever written). Changing any field of a record changes
its hash; removing or reordering records breaks the ``seq`` numbering or a
``prev`` link. On disk each record is its canonical object *with* the hash,
one per line.

Kinds:

* ``message`` -- one instant message (sender, recipients, time, content
  type, body, conversation id, call id, federated flag, and ``mode``:
  ``pager`` for a stand-alone MESSAGE, ``session`` for one inside a dialog);
* ``purge`` -- written by a purge: records through ``through_seq`` (whose
  hash was ``through_hash``) were removed on purpose (see :mod:`.purge`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

FORMAT_VERSION = 1
"""``v`` of every record; bumped if the canonical form ever changes."""

GENESIS = "0" * 64
"""The ``prev`` of the first record of an archive."""

CHAIN_FIELDS = ("seq", "prev", "hash")
"""Fields the writer fills in; callers build records without them."""

MAX_ID_LENGTH = 256
"""Longest conversation id kept from a request header; longer ones are cut.
Call-IDs are bounded by the parser's message size; this bounds the index
an export builds per conversation."""

CONVERSATION_HEADERS = ("Conversation-ID", "Ms-Conversation-ID")
"""Headers naming a conversation, first match wins: OMA CPM / RCS's
Conversation-ID and Lync's Ms-Conversation-ID. Without them a pager-mode
MESSAGE's conversation is its Call-ID."""

Record = dict[str, Any]


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: every field except ``hash``."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of :func:`canonical` ``(record)``."""
    return hashlib.sha256(canonical(record)).hexdigest()


def seal(record: Mapping[str, Any], *, seq: int, prev: str) -> tuple[Record, bytes]:
    """Number and chain ``record``; return it with its hash and its line (with newline)."""
    sealed: Record = {k: v for k, v in record.items() if k not in CHAIN_FIELDS}
    sealed["seq"] = seq
    sealed["prev"] = prev
    sealed["hash"] = record_hash(sealed)
    line = json.dumps(sealed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sealed, line.encode() + b"\n"


def format_time(when: float | dt.datetime) -> str:
    """UTC ISO 8601 with microseconds and a ``Z``: ``2026-11-26T08:00:00.123456Z``."""
    moment = when if isinstance(when, dt.datetime) else dt.datetime.fromtimestamp(when, dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """The inverse of :func:`format_time` (any ISO 8601 form; naive means UTC)."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def encode_body(body: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 bodies stay readable, anything else is base64."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def decode_body(record: Mapping[str, Any]) -> bytes:
    """The original body bytes of a message record."""
    text = str(record.get("body", ""))
    if record.get("body_encoding") == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


def message_record(
    *,
    sender: str,
    recipients: list[str],
    time: float,
    content_type: str,
    body: bytes,
    conversation_id: str,
    call_id: str,
    federated: bool,
    session: bool,
) -> Record:
    """An unsealed ``message`` record (the writer adds ``seq``, ``prev``, ``hash``)."""
    text, encoding = encode_body(body)
    return {
        "v": FORMAT_VERSION,
        "kind": "message",
        "time": format_time(time),
        "sender": sender,
        "recipients": list(recipients),
        "content_type": content_type,
        "body": text,
        "body_encoding": encoding,
        "conversation_id": conversation_id[:MAX_ID_LENGTH],
        "call_id": call_id[:MAX_ID_LENGTH],
        "federated": federated,
        "mode": "session" if session else "pager",
    }


def purge_record(
    *, time: float, through_seq: int, through_hash: str, before: str, removed: int
) -> Record:
    """An unsealed ``purge`` record: records up to ``through_seq`` were removed on purpose."""
    return {
        "v": FORMAT_VERSION,
        "kind": "purge",
        "time": format_time(time),
        "through_seq": through_seq,
        "through_hash": through_hash,
        "before": before,
        "removed": removed,
    }
