"""RFC 3261 §25 grammar as regular expressions, with the ABNF beside each rule.

Only lexical rules live here. Structure (start lines, header fields, URIs)
is built from them in the parser and URI modules. Everything operates on
``str``: the parser decodes header bytes as UTF-8 (with ``surrogateescape``
so that no octet is ever lost) before applying these rules.
"""

from __future__ import annotations

import re

from .errors import RemoteProtocolError

# alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
#   token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = rf"[{TOKEN_CHARS}]+"
TOKEN_RE = re.compile(TOKEN)

#   word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#             "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"

#   LWS  = [*WSP CRLF] 1*WSP ; linear whitespace
#   SWS  = [LWS]             ; sep whitespace
# Folding (CRLF followed by WSP) has already been replaced by a single SP by
# the time header values reach these rules (RFC 3261 §7.3.1), so LWS is just WSP.
LWS = r"[ \t]+"
SWS = r"[ \t]*"

#   quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext        = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair   = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
QUOTED_STRING_RE = re.compile(QUOTED_STRING)

#   Method = INVITEm / ACKm / ... / extension-method ; extension-method = token
METHOD_RE = re.compile(TOKEN)

#   header-name = token
HEADER_NAME_RE = re.compile(TOKEN)

#   gen-value = token / host / quoted-string
#   generic-param = token [ EQUAL gen-value ]
GENERIC_PARAM_RE = re.compile(
    rf"(?P<name>{TOKEN}){SWS}(?:={SWS}(?P<value>{QUOTED_STRING}|[^;,\s\"]+))?"
)

_UNQUOTE_RE = re.compile(r"\\(.)", re.DOTALL)
_HEX = "0123456789abcdefABCDEF"


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 token."""
    return TOKEN_RE.fullmatch(text) is not None


def unquote(text: str) -> str:
    """Strip the quotes of a quoted-string and resolve its quoted-pairs.

    ``text`` must already match :data:`QUOTED_STRING`; the caller checks that.
    """
    inner = text[1:-1]
    if "\\" not in inner:  # the common case: no quoted-pair to resolve
        return inner
    return _UNQUOTE_RE.sub(r"\1", inner)


def quote(text: str) -> str:
    """Render ``text`` as a quoted-string, escaping ``"`` and ``\\``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` wherever it is not inside quotes or ``<>``.

    Used for comma-separated header values (§7.3.1) and for ``;`` parameter
    lists. The pieces are returned unstripped. Raises ``RemoteProtocolError``
    for an unterminated quoted string or angle bracket, since no split of
    such a value is trustworthy.
    """
    if '"' not in text:
        # The common cases, without the scanner: nothing to protect (no quoted
        # string, no <URI>), or nothing to split at. A '<' with no '>' after
        # it is the one error left to find without quotes.
        if "<" not in text:
            return text.split(sep)
        if sep not in text:
            if text.rfind("<") > text.rfind(">"):
                raise RemoteProtocolError("unterminated '<' in header value")
            return [text]
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif in_angle:
            if c == ">":
                in_angle = False
        elif c == "<":
            in_angle = True
        elif c == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes:
        raise RemoteProtocolError("unterminated quoted string")
    if in_angle:
        raise RemoteProtocolError("unterminated '<' in header value")
    parts.append(text[start:])
    return parts


def percent_decode(text: str) -> str:
    """Resolve %HH escapes exactly once (RFC 3261 §19.1.2), never recursively.

    The octets are decoded as UTF-8 with ``surrogateescape``, so escaped bytes
    that are not UTF-8 (including %00) survive and re-encode to the same
    octets. A ``%`` not followed by two hex digits is a syntax error.
    """
    if "%" not in text:
        return text
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25:  # '%'
            hi = raw[i + 1 : i + 2].decode("latin-1")
            lo = raw[i + 2 : i + 3].decode("latin-1")
            if not hi or not lo or hi not in _HEX or lo not in _HEX:
                raise RemoteProtocolError("bad %-escape")
            out.append(int(hi + lo, 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "surrogateescape")


_PLAIN: dict[str, re.Pattern[str]] = {}
"""Per ``safe`` set: a pattern matching text that needs no escaping at all."""


def percent_encode(text: str, safe: str) -> str:
    """Escape every octet of ``text`` that is not alphanumeric or in ``safe``."""
    plain = _PLAIN.get(safe)
    if plain is None:  # a handful of fixed sets, from the URI module
        plain = _PLAIN[safe] = re.compile(f"[A-Za-z0-9{re.escape(safe)}]*")
    if plain.fullmatch(text) is not None:
        return text
    out: list[str] = []
    for byte in text.encode("utf-8", "surrogateescape"):
        ch = chr(byte)
        if byte < 0x80 and (ch.isalnum() or ch in safe):
            out.append(ch)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)
