"""RFC 5424 syslog messages and RFC 5425 octet-counting framing. Sans-IO.

An event becomes one RFC 5424 message (§6)::

    SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG]
    HEADER     = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
    PRI        = "<" PRIVAL ">"            ; facility * 8 + severity
    SD-ELEMENT = "[" SD-ID *(SP SD-PARAM) "]"
    SD-PARAM   = PARAM-NAME "=" %d34 PARAM-VALUE %d34   ; '"', '\\' and ']' escaped
    MSG        = BOM UTF-8-STRING          ; here: the event as one JSON object

Conclave's structured data element is ``[conclave@32473 ...]`` carrying the
agent's ``origin`` and ``seq`` (so a controller can drop duplicates and
acknowledge) and the correlation keys (``role``, ``call_id``, ``user``,
``conversation_id``), so that a plain syslog server can filter on them
without parsing the JSON.

On the wire (RFC 5425 §4.3, RFC 6587 §3.4.1) each message is preceded by
its length in octets: ``MSG-LEN SP SYSLOG-MSG``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

FACILITY_LOCAL0: Final = 16
"""RFC 5424 §6.2.1 facility 16, local use 0: where applications log by convention."""

SD_ID: Final = "conclave@32473"
"""32473 is IANA's example Private Enterprise Number (RFC 5612); the SD-ID
changes when the project registers its own."""

APP_NAME: Final = "conclave"

MAX_MESSAGE: Final = 256 * 1024
"""Longest syslog message sent or accepted. A SIP message is at most 64 KiB and
JSON escaping can double it; rsyslog needs ``maxMessageSize`` raised to match."""

MAX_SD_VALUE: Final = 256
"""Longest correlation value copied into structured data (a Call-ID may be long;
the JSON in MSG keeps it whole)."""

_MAX_LEN_DIGITS: Final = len(str(MAX_MESSAGE))

SEVERITIES: Final = {
    "emergency": 0,
    "alert": 1,
    "critical": 2,
    "error": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
"""RFC 5424 §6.2.1 severities by structlog level name (``exception`` is ``error``)."""
_LEVEL_OF = {v: k for k, v in SEVERITIES.items()}

CORRELATION_KEYS: Final = ("role", "call_id", "user", "conversation_id")
"""Event fields copied into the structured data element, when present."""

_BOM = "\ufeff"
_PRINTUSASCII = re.compile(r"[\x21-\x7e]+")
_SD_ESCAPE = str.maketrans({'"': '\\"', "\\": "\\\\", "]": "\\]"})


class SyslogError(ValueError):
    """A message or frame that does not follow RFC 5424 / RFC 5425."""


@dataclass(frozen=True)
class SyslogMessage:
    """One parsed RFC 5424 message."""

    facility: int
    severity: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured: dict[str, dict[str, str]] = field(default_factory=dict)
    msg: str = ""

    @property
    def level(self) -> str:
        return _LEVEL_OF.get(self.severity, "info")


def _token(value: object, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or the NILVALUE ``-``."""
    text = "".join(_PRINTUSASCII.findall(str(value).replace(" ", "_")))[:limit]
    return text or "-"


def _timestamp(value: object) -> str:
    """RFC 5424 §6.2.3 TIMESTAMP in UTC with at most six fractional digits."""
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            when = dt.datetime.now(dt.UTC)
    else:
        when = dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_event(
    event: Mapping[str, Any],
    *,
    origin: str | None = None,
    seq: int | None = None,
    procid: int | str = "-",
    facility: int = FACILITY_LOCAL0,
) -> bytes:
    """The RFC 5424 message for a structured event (``time``, ``host``, ``level``, ``event``...).

    The whole event goes in MSG as JSON after a BOM. A result longer than
    :data:`MAX_MESSAGE` has its longest string fields cut (and says so) until
    it fits; the caller frames it with :func:`frame`.
    """
    severity = SEVERITIES.get(str(event.get("level", "info")).lower(), 3)
    params: list[tuple[str, str]] = []
    if origin is not None and seq is not None:
        params += [("origin", origin), ("seq", str(seq))]
    params += [
        (k, str(event[k])[:MAX_SD_VALUE])
        for k in CORRELATION_KEYS
        if event.get(k) not in (None, "")
    ]
    sd = "[" + SD_ID + "".join(f' {k}="{v.translate(_SD_ESCAPE)}"' for k, v in params) + "]"
    header = " ".join(
        (
            f"<{facility * 8 + severity}>1",
            _timestamp(event.get("time")),
            _token(event.get("host", "-"), 255),
            APP_NAME,
            _token(procid, 128),
            _token(event.get("event", "-"), 32),
        )
    )
    body = dict(event)
    data = f"{header} {sd} {_BOM}{_dumps(body)}".encode()
    while len(data) > MAX_MESSAGE:
        strings = [k for k, v in body.items() if isinstance(v, str) and v and k != "truncated"]
        if not strings:  # the bulk is not in strings: keep only the essentials
            body = {k: event[k] for k in ("time", "host", "level", "event") if k in event}
            body["truncated"] = "*"
            data = f"{header} {sd} {_BOM}{_dumps(body)}".encode()
            break
        longest = max(strings, key=lambda k: len(body[k]))
        value = body[longest]
        body[longest] = value[: max(0, len(value) - (len(data) - MAX_MESSAGE) - 64)]
        body["truncated"] = longest
        data = f"{header} {sd} {_BOM}{_dumps(body)}".encode()
    return data


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def frame(message: bytes) -> bytes:
    """RFC 5425 §4.3 octet-counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message


def parse_message(data: bytes) -> SyslogMessage:
    """Parse one RFC 5424 message; raise :class:`SyslogError` if it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SyslogError("not UTF-8") from None
    match = re.match(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ", text)
    if match is None:
        raise SyslogError("not an RFC 5424 header")
    prival = int(match.group(1))
    if prival > 191:
        raise SyslogError("PRI out of range")
    structured, rest = _parse_sd(text, match.end())
    msg = rest[1:] if rest.startswith(" ") else rest
    if rest and not rest.startswith(" "):
        raise SyslogError("no space before MSG")
    return SyslogMessage(
        facility=prival // 8,
        severity=prival % 8,
        timestamp=match.group(2),
        hostname=match.group(3),
        app_name=match.group(4),
        procid=match.group(5),
        msgid=match.group(6),
        structured=structured,
        msg=msg.removeprefix(_BOM),
    )


_SD_PARAM = re.compile(r' ([^= \]"]{1,32})="((?:[^"\\]|\\.)*)"', re.DOTALL)


def _parse_sd(text: str, pos: int) -> tuple[dict[str, dict[str, str]], str]:
    if text.startswith("-", pos):
        return {}, text[pos + 1 :]
    elements: dict[str, dict[str, str]] = {}
    while text.startswith("[", pos):
        id_match = re.compile(r'\[([^= \]"]{1,32})').match(text, pos)
        if id_match is None:
            raise SyslogError("malformed SD-ID")
        params: dict[str, str] = {}
        pos = id_match.end()
        while (param := _SD_PARAM.match(text, pos)) is not None:
            params[param.group(1)] = re.sub(r"\\(.)", r"\1", param.group(2), flags=re.DOTALL)
            pos = param.end()
        if not text.startswith("]", pos):
            raise SyslogError("malformed structured data")
        elements[id_match.group(1)] = params
        pos += 1
    if not elements:
        raise SyslogError("no structured data (use '-' for none)")
    return elements, text[pos:]


def event_of(message: SyslogMessage) -> dict[str, Any]:
    """The event a message carries: its JSON MSG, or one built from the header for
    messages from other senders (rsyslog forwarding its own host's logs, say)."""
    if message.msg.startswith("{"):
        try:
            value = json.loads(message.msg)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            value.setdefault("time", message.timestamp)
            value.setdefault("host", message.hostname)
            value.setdefault("level", message.level)
            value.setdefault("event", message.msgid)
            return value
    event: dict[str, Any] = {
        "time": message.timestamp,
        "host": message.hostname,
        "level": message.level,
        "event": message.msg or message.msgid,
        "app": message.app_name,
    }
    event.update(message.structured.get(SD_ID, {}))
    return event


class OctetCountingFramer:
    """Split a TLS byte stream into RFC 5425 frames (``MSG-LEN SP SYSLOG-MSG``).

    ``feed(data)`` returns the complete messages so far. A length that is not
    digits, has a leading zero, or exceeds ``max_message`` raises
    :class:`SyslogError`: the stream cannot be resynchronised, so close it.
    The buffer never holds more than one frame's worth of octets.
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._need: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while True:
            if self._need is None:
                if not self._buffer:
                    return out
                space = self._buffer.find(b" ", 0, _MAX_LEN_DIGITS + 1)
                if space < 0:
                    if len(self._buffer) > _MAX_LEN_DIGITS or not self._buffer.isdigit():
                        raise SyslogError("frame does not start with MSG-LEN SP")
                    return out  # the length is still arriving
                digits = bytes(self._buffer[:space])
                if not digits.isdigit() or digits.startswith(b"0"):
                    raise SyslogError("frame does not start with MSG-LEN SP")
                need = int(digits)
                if need > self.max_message:
                    raise SyslogError(f"message of {need} octets exceeds {self.max_message}")
                del self._buffer[: space + 1]
                self._need = need
            if len(self._buffer) < self._need:
                return out
            out.append(bytes(self._buffer[: self._need]))
            del self._buffer[: self._need]
            self._need = None
