"""Resource list notifications (RFC 4662 ``eventlist``): RLMI plus one PIDF per contact.

A user subscribes once to their contact list (``Require: eventlist``,
``Accept: multipart/related, application/rlmi+xml, application/pidf+xml``);
each NOTIFY then carries a ``multipart/related`` body (RFC 2387) whose root
part is the RLMI document (RFC 4662 §5) and whose other parts are the PIDF
bodies of the contacts, each referred to from the RLMI by Content-ID
(RFC 2392). :func:`render_rlmi_multipart` builds that body; the caller keeps
the per-subscription ``version`` (RFC 4662 §5.2: +1 per NOTIFY) and chooses
full or partial state.

:func:`split_multipart` reads such a body back (for tests and tools).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from conclave.services.presence.pidf import (
    PIDF_CONTENT_TYPE,
    XML_DECLARATION,
    xml_attr,
    xml_text,
)

RLMI_CONTENT_TYPE = "application/rlmi+xml"
RLMI_NS = "urn:ietf:params:xml:ns:rlmi"

RESOURCE_STATES = frozenset({"active", "pending", "terminated"})
"""Instance states of RFC 4662 §5.2."""

MAX_BOUNDARY_LENGTH = 70
"""RFC 2046 §5.1.1: a boundary is 1 to 70 characters."""

MAX_MULTIPART_PARTS = 2048
"""Most parts :func:`split_multipart` accepts: a full contact list (1000)
plus the root, with room to spare; it bounds the work on a hostile body."""

#   bchars := bcharsnospace / " "   (RFC 2046 §5.1.1); no trailing space.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]\Z")

#   RFC 2392: content-id = "<" addr-spec ">"; a conservative dot-atom@dot-atom.
_CID_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,200}"
_CID_RE = re.compile(rf"{_CID_ATOM}@{_CID_ATOM}\Z")


def _digest_id(text: str) -> str:
    # A stable identifier derived from a URI: RLMI instance ids and default
    # Content-IDs must be unique in one notification and may not be random
    # (bodies are deterministic for equal input).
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ResourcePart:
    """One contact in a list notification.

    ``body`` is the contact's PIDF (already privacy-filtered and rendered) or
    None (pending and terminated instances carry none). ``cid`` is the
    Content-ID of that body without angle brackets; left None, a stable one
    is derived from the instance id. ``instance_id`` defaults to a stable hash
    of ``uri`` (RFC 4662 §5.2 wants it unique per resource and stable across
    notifications of one subscription). ``reason`` goes with "terminated"
    (e.g. "rejected", "noresource").
    """

    uri: str
    name: str | None = None
    state: str = "active"
    body: bytes | None = None
    cid: str | None = None
    reason: str | None = None
    instance_id: str | None = None
    content_type: str = PIDF_CONTENT_TYPE

    def __post_init__(self) -> None:
        if self.state not in RESOURCE_STATES:
            raise ValueError(f"invalid instance state {self.state!r}")
        if self.cid is not None and not _CID_RE.match(self.cid):
            raise ValueError(f"invalid Content-ID {self.cid!r}")
        if self.body is None and self.cid is not None:
            raise ValueError("a Content-ID needs a body")

    @property
    def instance(self) -> str:
        """The RLMI instance id."""
        return self.instance_id or _digest_id(self.uri)

    @property
    def content_id(self) -> str | None:
        """The Content-ID of the body (without ``<>``), or None without a body."""
        if self.body is None:
            return None
        return self.cid or f"{self.instance}@conclave.invalid"


def _resource_lines(part: ResourcePart) -> list[str]:
    lines = [f'  <resource uri="{xml_attr(part.uri)}">']
    if part.name:
        lines.append(f"    <name>{xml_text(part.name)}</name>")
    attrs = [f'id="{xml_attr(part.instance)}"', f'state="{part.state}"']
    if part.reason and part.state == "terminated":
        attrs.append(f'reason="{xml_attr(part.reason)}"')
    if part.content_id:
        attrs.append(f'cid="{xml_attr(part.content_id)}"')
    lines.append(f"    <instance {' '.join(attrs)}/>")
    lines.append("  </resource>")
    return lines


def render_rlmi(
    list_uri: str, version: int, *, full_state: bool, resources: Sequence[ResourcePart]
) -> bytes:
    """The RLMI document alone (RFC 4662 §5), resources in the order given."""
    if version < 0:
        raise ValueError("the RLMI version must not be negative")
    full = "true" if full_state else "false"
    lines = [
        XML_DECLARATION,
        f'<list xmlns="{RLMI_NS}" uri="{xml_attr(list_uri)}" version="{version}"'
        f' fullState="{full}">',
    ]
    for part in resources:
        lines += _resource_lines(part)
    lines.append("</list>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _mime_part(delimiter: bytes, cid: str, content_type: str, body: bytes) -> bytes:
    headers = (
        "Content-Transfer-Encoding: binary\r\n"
        f"Content-ID: <{cid}>\r\n"
        f'Content-Type: {content_type};charset="UTF-8"\r\n'
    )
    return delimiter + b"\r\n" + headers.encode("ascii") + b"\r\n" + body + b"\r\n"


def render_rlmi_multipart(
    list_uri: str,
    version: int,
    *,
    full_state: bool,
    resources: Sequence[ResourcePart],
    boundary: str,
    rlmi_cid: str | None = None,
) -> tuple[str, bytes]:
    """A list NOTIFY body: ``(Content-Type value, body)``.

    The RLMI document comes first (it is the ``start`` part), then one part
    per resource that has a body, in order. ``boundary`` must be a valid
    RFC 2046 boundary that occurs in none of the bodies (ValueError
    otherwise: pick another, e.g. from the subscription id and version).
    Content-IDs must be distinct. Deterministic for equal arguments.
    """
    if not _BOUNDARY_RE.match(boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    root_cid = rlmi_cid or f"rlmi-{_digest_id(list_uri)}@conclave.invalid"
    if not _CID_RE.match(root_cid):
        raise ValueError(f"invalid Content-ID {root_cid!r}")
    rlmi = render_rlmi(list_uri, version, full_state=full_state, resources=resources)
    delimiter = b"--" + boundary.encode("ascii")
    parts = [_mime_part(delimiter, root_cid, RLMI_CONTENT_TYPE, rlmi)]
    seen = {root_cid}
    for resource in resources:
        cid = resource.content_id
        if cid is None or resource.body is None:
            continue
        if cid in seen:
            raise ValueError(f"duplicate Content-ID {cid!r}")
        seen.add(cid)
        parts.append(_mime_part(delimiter, cid, resource.content_type, resource.body))
    if any(delimiter in part.split(b"\r\n", 1)[1] for part in parts):
        raise ValueError("the multipart boundary occurs inside a body")
    body = b"".join(parts) + delimiter + b"--\r\n"
    content_type = (
        f'multipart/related;type="{RLMI_CONTENT_TYPE}";start="<{root_cid}>";boundary="{boundary}"'
    )
    return content_type, body


@dataclass(frozen=True, slots=True)
class MimePart:
    """One part of a multipart body: header fields (lower-case names) and content."""

    headers: dict[str, str]
    body: bytes


_BOUNDARY_PARAM_RE = re.compile(r';\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


def split_multipart(content_type: str, body: bytes) -> list[MimePart]:
    """The parts of a ``multipart/*`` body (RFC 2046 §5.1), in order.

    Preamble and epilogue are ignored. Raises ValueError if there is no
    boundary parameter, no closing delimiter, or more than
    :data:`MAX_MULTIPART_PARTS` parts.
    """
    match = _BOUNDARY_PARAM_RE.search(content_type)
    if match is None:
        raise ValueError("no boundary parameter")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("ascii")
    chunks = (b"\r\n" + body).split(b"\r\n" + delimiter)
    if len(chunks) > MAX_MULTIPART_PARTS + 2:
        raise ValueError("too many parts")
    parts: list[MimePart] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return parts
        _, _, rest = chunk.partition(b"\r\n")
        if rest.startswith(b"\r\n"):
            head, content = b"", rest[2:]
        else:
            head, separator, content = rest.partition(b"\r\n\r\n")
            if not separator:
                raise ValueError("a part's header section does not end")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append(MimePart(headers, content))
    raise ValueError("no closing multipart delimiter")
