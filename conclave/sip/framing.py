"""Message framing for SIP over byte streams (RFC 3261 §18.3, RFC 5626 §3.5.1).

On TCP and TLS one message follows another with nothing in between but, now
and then, CRLFs. The end of the header section is the first empty line and the
body is exactly Content-Length octets, so Content-Length is mandatory on streams
(RFC 3261 §18.3, §20.14). :class:`StreamFramer` cuts the stream into
:class:`Frame` objects, each the raw bytes of one message for the parser, and
:class:`KeepAlive` events for RFC 5626 pings.

WebSocket (RFC 7118 §5) frames messages itself, one SIP message per WebSocket
message, so a WebSocket transport hands each message to the parser directly,
as for UDP, and does not need this module.

Theory of operation. The framer has four states:

- IDLE, between messages. ``CRLF CRLF`` is a ping: emit :class:`KeepAlive`, whose
  ``pong`` (a single CRLF) the caller sends back (RFC 5626 §3.5.1). A lone CRLF
  before a start line is ignored (RFC 3261 §7.5). Any other octet starts a message.
- HEADERS, reading lines until the empty one. Each line is examined once as it
  completes; the search for the next CRLF resumes where the last one stopped, so
  the total work is linear in the octets received however the stream is split.
  Content-Length (or compact ``l``, any case, folded or not) is read on the way.
  Limits are checked as soon as they are certainly exceeded, before any more of
  the message is buffered: see :meth:`StreamFramer.next_event` for the statuses.
- BODY, waiting until Content-Length octets follow the empty line. The body is
  never searched, so it may hold anything, CRLFCRLF included.
- ERROR, terminal. A stream cannot resynchronise after a framing error, so the
  caller answers if it can and closes the connection. Using the framer again
  raises :class:`LocalProtocolError`.

Only CRLF ends a line; a bare LF does not (RFC 3261 §7). The framer checks
nothing but what framing needs: the parser judges the start line and headers.

Usage follows h11: ``receive_data(chunk)``, then call ``next_event()`` until it
returns None (more data needed). It raises :class:`RemoteProtocolError` at the
point of a framing error, after returning every complete event before it.
``feed(chunk)`` does both and returns a list, but loses the events that
preceded an error within the same chunk.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError
from .limits import MAX_HEADER_COUNT, MAX_HEADER_SECTION, MAX_LINE_LENGTH, MAX_MESSAGE_SIZE

PONG = b"\r\n"
"""The RFC 5626 §3.5.1 answer to a CRLFCRLF ping."""

_PING = b"\r\n\r\n"
_CRLF = b"\r\n"
_WSP = b" \t"
_CONTENT_LENGTH_NAMES = (b"content-length", b"l")
_MAX_DIGITS = 10  # 2**32 has 10 digits; longer (after leading zeros) is over any limit
# A Content-Length field (full or compact name) at the start of a header line.
_LENGTH_FIELD_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:([^\r\n]*)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Frame:
    """The raw octets of exactly one message, body included.

    ``body_start`` is the offset just past the empty line that ends the headers,
    so ``data[:body_start]`` is the start line and headers (ending CRLFCRLF) and
    ``data[body_start:]`` is the body of Content-Length octets.
    """

    data: bytes
    body_start: int


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """The peer sent a CRLFCRLF ping between messages; send ``pong`` back."""

    pong: bytes = PONG


class _State(enum.Enum):
    IDLE = "idle"
    HEADERS = "headers"
    BODY = "body"
    ERROR = "error"


class StreamFramer:
    """Splits one connection's inbound byte stream into messages and pings.

    The limits default to :mod:`conclave.sip.limits`; every size is in octets.
    ``max_message_size`` may be lowered (a deployment's ``[limits]
    max_message_size``) but not raised above
    :data:`~conclave.sip.limits.MAX_MESSAGE_SIZE`, and a header section is never
    allowed to be larger than it. ``max_header_section`` covers the start line and
    header lines with their CRLFs but not the final empty line; ``max_line_length``
    applies to a header field after unfolding (its physical lines together, CRLFs
    excluded).

    This framer answers pings. A client that sends pings would read each pong
    as an ignored CRLF (and two pongs with no message between as a ping).
    """

    def __init__(
        self,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_header_section: int = MAX_HEADER_SECTION,
        max_line_length: int = MAX_LINE_LENGTH,
        max_header_count: int = MAX_HEADER_COUNT,
    ) -> None:
        if min(max_message_size, max_header_section, max_line_length, max_header_count) < 1:
            raise LocalProtocolError("framing limits must be positive")
        if max_message_size > MAX_MESSAGE_SIZE:
            raise LocalProtocolError(
                f"max_message_size must be at most {MAX_MESSAGE_SIZE} (the parser's hard limit)"
            )
        self._max_message = max_message_size
        # A header section that alone exceeds the message limit is refused as
        # soon as it does, not buffered up to the larger section limit first.
        self._max_section = min(max_header_section, max_message_size)
        self._max_line = max_line_length
        self._max_fields = max_header_count
        # The current message always starts at offset 0: consumed octets are
        # deleted from the front, which CPython does without copying the rest.
        self._buf = bytearray()
        self._state = _State.IDLE
        self._reset_message()

    def _reset_message(self) -> None:
        self._scan = 0  # where the next CRLF search starts
        self._line_start = 0  # start of the physical line being read
        self._field_start = -1  # start of the header field not yet judged, else -1
        self._field_len = 0  # unfolded length of the current field so far
        self._fields = 0
        self._content_length: int | None = None
        self._body_start = 0  # in BODY: offset just past the empty line
        self._end = 0  # in BODY: offset just past the body

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned in an event (e.g. to log at close)."""
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Append received octets; then call :meth:`next_event` until it returns None."""
        if self._state is _State.ERROR:
            raise LocalProtocolError("framer is in the ERROR state; close the connection")
        self._buf += data

    def feed(self, data: bytes) -> list[Frame | KeepAlive]:
        """``receive_data(data)``, then every event now complete, in order."""
        self.receive_data(data)
        events: list[Frame | KeepAlive] = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def next_event(self) -> Frame | KeepAlive | None:
        """The next complete event, or None when more data is needed.

        Raises :class:`RemoteProtocolError` and enters the ERROR state on:
        missing, non-numeric, negative or conflicting Content-Length (400); a line
        over ``max_line_length`` (400); more than ``max_header_count`` header
        fields (400); a header section over ``max_header_section`` (413, as SIP
        has no 431); a message over ``max_message_size``, judged from
        Content-Length before the body arrives (413).
        """
        if self._state is _State.ERROR:
            raise LocalProtocolError("framer is in the ERROR state; close the connection")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._state = _State.ERROR
            self._buf = bytearray()
            raise

    def _next_event(self) -> Frame | KeepAlive | None:
        buf = self._buf
        while True:
            if self._state is _State.IDLE:
                if buf.startswith(_PING):
                    del buf[:4]
                    return KeepAlive()
                if buf.startswith(_CRLF):
                    if _PING.startswith(buf):  # maybe the first half of a ping
                        return None
                    del buf[:2]  # RFC 3261 §7.5: ignore CRLF before a start line
                    continue
                if not buf or buf == b"\r":
                    return None
                self._reset_message()
                self._state = _State.HEADERS
            if self._state is _State.HEADERS:
                if not (self._scan == 0 and self._whole_headers()) and not self._scan_headers():
                    return None
                self._state = _State.BODY
            # BODY
            if len(buf) < self._end:
                return None
            frame = Frame(bytes(buf[: self._end]), self._body_start)
            del buf[: self._end]
            self._state = _State.IDLE
            return frame

    def _whole_headers(self) -> bool:
        """The fast path: the whole header section is here, unfolded and within limits.

        Judged with a few C-level searches instead of line by line. False
        leaves everything to :meth:`_scan_headers` (which also raises the
        errors about sizes and counts).
        """
        buf = self._buf
        end = buf.find(_PING, 0, self._max_section + 2)
        if end < 0 or end + 2 > self._max_section:
            return False
        section = bytes(buf[:end])
        if b"\r\n " in section or b"\r\n\t" in section:
            return False  # folded lines: the scanner unfolds them
        if section.count(_CRLF) > self._max_fields:
            return False
        if len(section) > self._max_line and max(map(len, section.split(_CRLF))) > self._max_line:
            return False
        for match in _LENGTH_FIELD_RE.finditer(section):
            self._judge_length(match.group(1))
        self._headers_done(end + 4)
        return True

    def _headers_done(self, body_start: int) -> None:
        """The empty line ends just before ``body_start``: place the body, or raise."""
        if self._content_length is None:
            raise RemoteProtocolError("Content-Length is mandatory on streams")
        self._body_start = body_start
        self._end = body_start + self._content_length
        if self._end > self._max_message:
            raise RemoteProtocolError("message too large", 413)

    def _scan_headers(self) -> bool:
        """Consume complete lines; True once the empty line has been seen."""
        buf = self._buf
        while True:
            # A physical line longer than the line limit is an error whatever
            # follows, so never search further than that for its CRLF.
            stop = self._line_start + self._max_line + 2
            p = buf.find(_CRLF, self._scan, stop)
            if p < 0:
                self._check_partial_line()
                self._scan = max(self._line_start, min(len(buf), stop) - 1)
                return False
            start = self._line_start
            self._line_start = self._scan = p + 2
            if p == start:  # the empty line: headers complete
                self._end_field(start - 2)
                self._headers_done(p + 2)
                return True
            if p + 2 > self._max_section:
                raise RemoteProtocolError("header section too large", 413)
            if start > 0 and buf[start] in _WSP:
                # Folded onto the line before (RFC 3261 §7.3.1). After the start
                # line this is invalid, but that is for the parser to say.
                self._field_len += p - start
            else:
                self._end_field(start - 2)
                if start > 0:
                    self._fields += 1
                    if self._fields > self._max_fields:
                        raise RemoteProtocolError("too many header fields")
                    self._field_start = start
                self._field_len = p - start
            if self._field_len > self._max_line:
                raise RemoteProtocolError("header line too long")

    def _check_partial_line(self) -> None:
        """Limits for the incomplete line at the end of the buffer."""
        buf = self._buf
        size = len(buf) - self._line_start
        if buf.endswith(b"\r"):
            size -= 1  # that CR may be the start of the line's CRLF
        if size <= 0:
            return
        folded = self._line_start > 0 and buf[self._line_start] in _WSP
        if size + (self._field_len if folded else 0) > self._max_line:
            raise RemoteProtocolError("header line too long")
        if not folded:
            # The previous field cannot continue, so judge its Content-Length
            # now rather than after this line, which may be slow to arrive.
            self._end_field(self._line_start - 2)
        if self._line_start + size + 2 > self._max_section:
            raise RemoteProtocolError("header section too large", 413)

    def _end_field(self, end: int) -> None:
        """The field that started at ``_field_start`` ends at ``end``: check Content-Length."""
        start = self._field_start
        if start < 0:
            return  # on the start line, or this field was already judged
        self._field_start = -1
        buf = self._buf
        colon = buf.find(b":", start, end)
        if colon < 0:
            return  # not a header field; the parser will say so
        if buf[start:colon].rstrip(_WSP).lower() not in _CONTENT_LENGTH_NAMES:
            return
        # Unfold (CRLF followed by WSP): Content-Length = 1*DIGIT (§20.14).
        self._judge_length(bytes(buf[colon + 1 : end]).replace(_CRLF, b""))

    def _judge_length(self, raw: bytes) -> None:
        """One Content-Length value (untrimmed): record it, or raise."""
        value = raw.strip(_WSP)
        if not value.isdigit():
            raise RemoteProtocolError("Content-Length is not a number")
        digits = value.lstrip(b"0") or b"0"
        if len(digits) > _MAX_DIGITS:
            raise RemoteProtocolError("message too large", 413)
        length = int(digits)
        if self._content_length is not None and self._content_length != length:
            raise RemoteProtocolError("conflicting Content-Length values")
        if length > self._max_message:
            raise RemoteProtocolError("message too large", 413)
        self._content_length = length
