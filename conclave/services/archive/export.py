"""eDiscovery export: one user's messages in a time range, as JSON lines or mbox.

Records are read in chain order straight from the segment files, so an
export can run while the server writes. ``jsonl`` gives each message record
exactly as archived (with ``seq``, ``prev`` and ``hash``, so each line can be
checked against a verified archive). ``mbox`` (mboxrd quoting) gives each
message as an e-mail that any mail tool opens: the sender in From, the
recipients in To, the archive time in Date, the conversation in Subject and
In-Reply-To (so mail clients thread a conversation), the body as the text
part, or as an attachment when it is not text.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO, Literal

from .record import Record, decode_body, parse_time
from .segments import iter_lines, list_segments

Format = Literal["jsonl", "mbox"]

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


def archive_size(directory: Path) -> int:
    """Bytes an export reads (for a progress bar)."""
    return sum(p.stat().st_size for p in list_segments(directory))


def iter_messages(
    directory: Path,
    *,
    user: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Record]:
    """Message records involving ``user`` (an AOR; None: everyone) in ``[since, until)``.

    ``progress(n)`` is told how many bytes were read as it goes. Lines that
    do not parse are skipped here: ``archive verify`` is what reports them.
    """
    wanted = user.lower() if user else None
    for segment in list_segments(directory):
        for line in iter_lines(segment):
            if progress is not None:
                progress(len(line.data) + 1)
            if not line.complete:
                continue
            try:
                record = json.loads(line.data)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("kind") != "message":
                continue
            if wanted is not None:
                parties = [str(record.get("sender", "")), *map(str, record.get("recipients", []))]
                if wanted not in (p.lower() for p in parties):
                    continue
            try:
                when = parse_time(str(record["time"]))
            except (KeyError, ValueError):
                continue
            if (since is not None and when < since) or (until is not None and when >= until):
                continue
            yield record


def _address(uri: str) -> str:
    return uri.removeprefix("sip:").removeprefix("sips:")


def to_email(record: Record) -> EmailMessage:
    """One message record as an e-mail."""
    message = EmailMessage()
    message["From"] = _address(str(record.get("sender", "")))
    message["To"] = ", ".join(_address(str(r)) for r in record.get("recipients", []))
    when = parse_time(str(record["time"]))
    message["Date"] = email.utils.format_datetime(when)
    conversation = str(record.get("conversation_id", ""))
    message["Subject"] = f"IM conversation {conversation}"
    message["Message-ID"] = f"<{record.get('seq')}.{str(record.get('hash', ''))[:16]}@archive>"
    message["In-Reply-To"] = f"<{conversation}@conversation>"
    message["X-Archive-Seq"] = str(record.get("seq"))
    message["X-Archive-Hash"] = str(record.get("hash"))
    message["X-SIP-Call-ID"] = str(record.get("call_id", ""))
    content_type = str(record.get("content_type", "text/plain"))
    body = decode_body(record)
    maintype, _, subtype = content_type.partition(";")[0].strip().partition("/")
    if maintype.lower() == "text" and record.get("body_encoding") == "utf-8":
        message.set_content(body.decode("utf-8"), subtype=subtype or "plain")
    else:
        message.set_content(f"A {content_type} message of {len(body)} bytes is attached.\n")
        message.add_attachment(
            body, maintype=maintype or "application", subtype=subtype or "octet-stream"
        )
    return message


def mbox_entry(record: Record) -> bytes:
    """An mboxrd entry: a ``From `` separator line, the message, a blank line."""
    when = parse_time(str(record["time"]))
    sender = _address(str(record.get("sender", ""))) or "unknown"
    separator = f"From {sender} {when.strftime('%a %b %d %H:%M:%S %Y')}\n".encode()
    data = to_email(record).as_bytes().replace(b"\r\n", b"\n")
    data = _FROM_LINE.sub(rb">\1", data)
    if not data.endswith(b"\n"):
        data += b"\n"
    return separator + data + b"\n"


def export(
    directory: Path,
    out: BinaryIO,
    fmt: Format,
    *,
    user: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write matching messages to ``out``; return how many."""
    count = 0
    for record in iter_messages(directory, user=user, since=since, until=until, progress=progress):
        if fmt == "jsonl":
            out.write(
                json.dumps(
                    record, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                ).encode()
                + b"\n"
            )
        else:
            out.write(mbox_entry(record))
        count += 1
    return count
