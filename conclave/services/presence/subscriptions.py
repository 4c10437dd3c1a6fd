"""SUBSCRIBE (RFC 6665) for ``presence`` (RFC 3856), ``presence.winfo`` (RFC 3857)
and the contact list as a resource list (RFC 4662).

A new SUBSCRIBE (no To tag) creates a subscription dialog; one inside a
dialog refreshes or ends it. The answer always comes first (the caller
sends it), then the NOTIFY the RFC requires "immediately" (RFC 6665
§4.2.1.2, §4.2.1.4): :meth:`Subscriptions.handle` returns both.

**What may be subscribed to.**

* ``presence`` of any enabled local user, by any signed-in user (what the
  watcher sees is decided by the owner's privacy rules, see :mod:`.views`);
  another address of this domain is 404 (so is a disabled user).
* The subscriber's **contact list**: ``presence`` of ``sip:USER+contacts@DOMAIN``
  (:data:`LIST_SUFFIX`), by ``USER`` only, with ``Supported: eventlist``
  (421 with ``Require: eventlist`` otherwise, RFC 4662 §4.1). A separate
  URI rather than the user's own AOR keeps one meaning per URI: the AOR is
  always the presentity, for clients with or without eventlist support. A
  user actually named ``USER+contacts`` is still reachable by everyone
  except ``USER`` (whose own list that URI is).
* ``presence.winfo`` of the subscriber's own AOR only (403 otherwise).

**Dialogs.** Our Contact (:func:`~.notifier.server_contact`) names this
server, so refreshes come back through the router's in-dialog path. The
subscription remembers the flow of the SUBSCRIBE (and of each refresh):
NOTIFYs reuse that connection. CSeq must rise (500 otherwise, RFC 3261
§12.2.2). An unknown dialog is 481.

**Expires**: absent means the default; 0 on a new SUBSCRIBE is a fetch
(one NOTIFY, terminated) and on a refresh an unsubscribe (final NOTIFY,
``reason=timeout``); below the minimum is 423 with ``Min-Expires``; above
the maximum is shortened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conclave.sip.address import aor_of
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.fields import parse_event, parse_expires
from conclave.sip.flow import Flow
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request
from conclave.sip.uri import URI
from conclave.sip.validate import check_extensions

from .directory import Directory, domain_part
from .notifier import Notifier, server_contact
from .publications import Answer, too_brief
from .settings import PresenceSettings
from .state import Kind, PresenceState, SubKey, Subscription
from .timers import Deadlines

LIST_SUFFIX = "+contacts"
"""``sip:alice+contacts@example.test`` is alice's contact list (see the module docstring)."""

PACKAGES = ("presence", "presence.winfo")
ALLOW_EVENTS = ", ".join(PACKAGES)

MAX_SUBSCRIPTIONS_PER_WATCHER = 1000
"""Subscriptions one user may hold at once. A contact list is one subscription,
so only clients without eventlist support come near (one per contact)."""

MAX_SUBSCRIPTIONS = 200_000
"""All subscriptions held; beyond it new ones get 503 (a few KiB each)."""

RETRY_AFTER_FULL = "60"

ACCEPT = {
    Kind.PRESENCE: ("application/pidf+xml",),
    Kind.LIST: ("multipart/related", "application/rlmi+xml", "application/pidf+xml"),
    Kind.WINFO: ("application/watcherinfo+xml",),
}
"""Bodies each kind sends; an Accept header must allow them all (406 otherwise)."""


@dataclass
class Outcome:
    """The answer to send, the To tag it needs, and what to do once it is sent."""

    answer: Answer
    to_tag: str | None = None
    then: Callable[[], None] | None = None


def _key(request: Request, package: str, event_id: str | None) -> SubKey:
    """A subscription's identity (RFC 6665 §4.1.2): the dialog and the event."""
    return (
        request.call_id or "",
        request.to_tag or "",
        request.from_tag or "",
        package,
        event_id or "",
    )


def list_uri(aor: str) -> str:
    """The contact list URI of the user ``aor`` (``sip:user+contacts@domain``)."""
    user, _, domain = aor.removeprefix("sip:").rpartition("@")
    return f"sip:{user}{LIST_SUFFIX}@{domain}"


def _accepts(request: Request, needed: tuple[str, ...]) -> bool:
    values = request.headers.get_all("Accept")
    if not values:
        return True
    types = {
        item.split(";", 1)[0].strip().lower()
        for value in values
        for item in value.split(",")
        if item.strip()
    }
    if not types or "*/*" in types:
        return True
    return all(n in types or n.split("/", 1)[0] + "/*" in types for n in needed)


def _supports_eventlist(request: Request) -> bool:
    for name in ("Supported", "Require"):
        for value in request.headers.get_all(name):
            if any(tag.strip().lower() == "eventlist" for tag in value.split(",")):
                return True
    return False


class Subscriptions:
    """Creates, refreshes, ends and expires subscriptions."""

    def __init__(
        self,
        *,
        state: PresenceState,
        notifier: Notifier,
        settings: PresenceSettings,
        deadlines: Deadlines,
        directory: Callable[[], Directory],
        local_user: Callable[[str], bool],
        local: LocalEndpoint,
        new_tag: Callable[[], str],
    ) -> None:
        self.state = state
        self.notifier = notifier
        self.settings = settings
        self.deadlines = deadlines
        self.directory = directory
        self.local_user = local_user
        self.local = local
        self.new_tag = new_tag

    def handle(self, request: Request, watcher: str, flow: Flow, now: float) -> Outcome:
        """Judge one SUBSCRIBE from ``watcher`` (its From AOR, already authenticated).

        RemoteProtocolError (a malformed header, 420) propagates: answer it.
        """
        event_value = request.headers.get("Event")
        if event_value is None:
            return Outcome(Answer(489, "Bad Event", (("Allow-Events", ALLOW_EVENTS),)))
        event = parse_event(event_value)
        package = event.package.lower()
        if package not in PACKAGES:
            return Outcome(Answer(489, "Bad Event", (("Allow-Events", ALLOW_EVENTS),)))
        check_extensions(request, "Require", frozenset({"eventlist"}))
        to_tag, remote_tag = request.to_tag, request.from_tag
        if remote_tag is None:
            return Outcome(Answer(400, "From has no tag"))
        key = _key(request, package, event.id)
        raw = request.headers.get("Expires")
        expires = self.settings.default_expires if raw is None else parse_expires(raw)
        if to_tag is not None:
            return self._refresh(request, key, watcher, flow, expires, now)
        return self._create(request, key, package, watcher, flow, expires, now)

    def knows(self, request: Request, flow: Flow) -> bool:
        """True for a refresh of a live subscription, from its watcher, on the
        flow the subscription was last refreshed on (see PresenceService.knows_dialog)."""
        value = request.headers.get("Event")
        if value is None or request.to_tag is None or request.from_tag is None:
            return False
        try:
            event = parse_event(value)
        except RemoteProtocolError:
            return False
        sub = self.state.subscription(_key(request, event.package.lower(), event.id))
        return sub is not None and sub.flow == flow and sub.watcher == request.from_aor

    # -- a new subscription ------------------------------------------------------------
    def _create(
        self,
        request: Request,
        key: SubKey,
        package: str,
        watcher: str,
        flow: Flow,
        expires: int,
        now: float,
    ) -> Outcome:
        s = self.settings
        if 0 < expires < s.min_expires:
            return Outcome(too_brief(s))
        expires = min(expires, s.max_expires)
        contact = self._contact(request)
        if contact is None:
            return Outcome(Answer(400, "SUBSCRIBE needs one Contact URI"))
        try:
            resource = aor_of(request.uri)
        except ValueError:
            return Outcome(Answer(404, "Not Found"))
        if domain_part(resource) != self.local.domain:
            return Outcome(Answer(404, "Not a domain served here"))
        if package == "presence.winfo":
            if resource != watcher:
                return Outcome(Answer(403, "Only a user may see who watches them"))
            kind, owner = Kind.WINFO, watcher
        elif resource == list_uri(watcher):
            if not _supports_eventlist(request):
                return Outcome(Answer(421, "Extension Required", (("Require", "eventlist"),)))
            kind, owner = Kind.LIST, watcher
        else:
            if not self.local_user(resource):
                return Outcome(Answer(404, "No such user"))
            kind, owner = Kind.PRESENCE, resource
        if not _accepts(request, ACCEPT[kind]):
            return Outcome(Answer(406, "Not Acceptable", (("Accept", ", ".join(ACCEPT[kind])),)))
        if len(self.state.of_watcher(watcher)) >= MAX_SUBSCRIPTIONS_PER_WATCHER:
            return Outcome(Answer(403, "Too many subscriptions"))
        if self.state.subscription_count() >= MAX_SUBSCRIPTIONS:
            return Outcome(Answer(503, "Presence is full", (("Retry-After", RETRY_AFTER_FULL),)))
        tag = self.new_tag()
        key = (key[0], tag, *key[2:])
        event_value = request.headers.get("Event") or ""
        sub = Subscription(
            key=key,
            kind=kind,
            watcher=watcher,
            owner=owner,
            resource=resource,
            event=event_value.strip(),
            target=contact,
            local=f"{request.headers.get('To')};tag={tag}",
            remote=request.headers.get("From") or "",
            route_set=tuple(request.headers.get_all("Record-Route")),
            flow=flow,
            expires_at=now + expires,
            remote_cseq=request.cseq.seq,
            pending=self.is_pending(kind, owner, watcher),
        )
        if kind is Kind.LIST:
            sub.members = frozenset(self.directory().contacts_of(owner))

        def start() -> None:
            if expires == 0:  # a fetch: one NOTIFY with the state, then nothing
                self.notifier.terminate(sub, "timeout")
                return
            self.state.add_subscription(sub)
            self.deadlines.schedule(("sub", key), sub.expires_at)
            for aor in sub.resources:
                self.notifier.winfo_changed(aor, now)
            self.notifier.notify_full(sub)

        return Outcome(self._ok(sub, expires), tag, start)

    def is_pending(self, kind: Kind, owner: str, watcher: str) -> bool:
        """Whether a watcher must wait for the owner's authorisation (external policy)."""
        if kind is not Kind.PRESENCE or self.settings.external_watchers != "pending":
            return False
        if domain_part(watcher) == domain_part(owner):
            return False
        return not self.directory().decided(owner, watcher)

    # -- refresh and unsubscribe ---------------------------------------------------------
    def _refresh(
        self,
        request: Request,
        key: SubKey,
        watcher: str,
        flow: Flow,
        expires: int,
        now: float,
    ) -> Outcome:
        sub = self.state.subscription(key)
        if sub is None:
            return Outcome(Answer(481, "Subscription does not exist"))
        if sub.watcher != watcher:
            return Outcome(Answer(403, "Not your subscription"))
        cseq = request.cseq.seq
        if cseq <= sub.remote_cseq:
            return Outcome(Answer(500, "CSeq out of order"))
        s = self.settings
        if 0 < expires < s.min_expires:
            return Outcome(too_brief(s))
        if request.headers.get("Contact") is not None:
            contact = self._contact(request)
            if contact is None:
                return Outcome(Answer(400, "Bad Contact"))
            sub.target = contact
        sub.remote_cseq = cseq
        sub.flow = flow  # connection reuse: the latest flow the subscriber used
        if expires == 0:
            self.deadlines.cancel(("sub", key))
            return Outcome(self._ok(sub, 0), None, lambda: self.notifier.terminate(sub, "timeout"))
        expires = min(expires, s.max_expires)
        sub.expires_at = now + expires
        self.deadlines.schedule(("sub", key), sub.expires_at)
        return Outcome(self._ok(sub, expires), None, lambda: self.notifier.notify_full(sub))

    def expire(self, key: SubKey, now: float) -> None:
        """A subscription's timer fired: end it with ``reason=timeout``."""
        sub = self.state.subscription(key)
        if sub is not None and sub.expires_at <= now:
            self.notifier.terminate(sub, "timeout")

    # -- helpers -----------------------------------------------------------------------
    def _ok(self, sub: Subscription, expires: int) -> Answer:
        headers = [
            ("Expires", str(expires)),
            ("Contact", server_contact(self.local, sub.flow)),
            # RFC 3261 §12.1.1: the proxies that record-routed the SUBSCRIBE (an Edge,
            # a partner's) stay on the subscriber's route for refreshes.
            *(("Record-Route", entry) for entry in sub.route_set),
        ]
        if sub.kind is Kind.LIST:
            headers.append(("Require", "eventlist"))
        return Answer(200, "OK", tuple(headers))

    @staticmethod
    def _contact(request: Request) -> URI | None:
        try:
            contacts = request.contacts
        except RemoteProtocolError:
            return None
        if len(contacts) != 1 or contacts[0] is None:
            return None
        return contacts[0].uri
