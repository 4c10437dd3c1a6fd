"""The logging controller (the ``logging-controller`` role): receives and stores events.

Agents connect over mutual TLS (RFC 5425): the controller presents its
certificate (``[logging_controller] cert``, by default the server's) and
requires one from a CA in ``[logging_controller] client_cas``, checked
against that CA's CRL (``crl.pem`` beside it) when every listed CA has one.
Each connection carries RFC 5424 messages in octet-counting framing; each
message is parsed, its JSON event extracted, and stored in the
:class:`~conclave.ops.logstore.LogStore` (``[logging_controller] store``).

Who may send, and what the controller believes (see docs/operations.md):

* **Servers only.** The certificate must be a server certificate
  (:func:`conclave.pki.identity.server_identity`: EKU serverAuth, DNS or IP
  names, no user URI). The CA issues users client certificates too, and
  those are refused, as is everything else, at the connection, before any
  event is read (``agent refused`` with the reason).
* **Hosts of the topology.** With a topology (``agents``), the certificate
  must name one of its hosts by FQDN, literally (a wildcard names no host).
  Without one (a Standard Edition deployment), any server certificate of a
  trusted CA is a server of the deployment.
* **Host and role from the certificate, not the message.** An event's
  ``host`` is kept only when the certificate names it (or, with a topology,
  when it is that host); otherwise it becomes the certificate's host and the
  claim is kept as ``claimed_host``. Its ``role`` must be one the topology
  gives that host (``standard`` without a topology), else it becomes the
  host's first role and the claim is kept as ``claimed_role``.
* **Bounded time.** An event time more than :data:`MAX_CLOCK_AHEAD` in the
  future, older than the retention, or unreadable is clamped to the time of
  arrival; the original is kept as ``claimed_time``. The event is stored
  (nothing is lost) but cannot be filed where it did not happen.
* **Revocation is re-read.** The certificate, key, CAs and CRLs are polled
  every ``reload_poll`` seconds (and reloaded at once on SIGHUP): new
  handshakes use the new files, and every open agent connection whose
  certificate a CRL now lists is closed (``agent disconnected`` with
  ``reason: certificate revoked``).

Acknowledgements (a Conclave extension): when a message carries Conclave's
structured data with ``origin`` and ``seq``, the controller writes
``ack N\\n`` back once everything up to ``N`` on that connection is
committed. Senders that never send those parameters (rsyslog, syslog-ng
forwarding) get nothing back, so standard senders work unchanged.

The controller's own warnings and key events are stored directly in the
same store, so it is searchable like every other server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sqlite3
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from cryptography import x509

from conclave.ops import log as logsetup
from conclave.ops.agent import FORWARDED_LEVELS, KEY_EVENTS
from conclave.ops.logstore import LogStore, Received, parse_time
from conclave.ops.syslog import SD_ID, OctetCountingFramer, SyslogError, event_of, parse_message
from conclave.pki.crl import load_crl, revoked_serials
from conclave.pki.errors import PkiError
from conclave.pki.files import FileSignature, file_signature
from conclave.pki.identity import ServerIdentity, server_identity
from conclave.pki.load import load_certificate
from conclave.pki.tls import load_crl_file, server_context

log = structlog.get_logger("conclave.controller")

PID_FILE: Final = "logging-controller.pid"
MAX_AGENTS: Final = 1_000
"""Connections served at once: one per server of the deployment, with room."""
READ_SIZE: Final = 64 * 1024
HANDSHAKE_TIMEOUT: Final = 10.0
PURGE_INTERVAL: Final = 3600.0
"""Seconds between deletions of events older than the retention."""
MAX_OWN_PENDING: Final = 10_000
"""The controller's own events queued for its store between two writes."""
MAX_CLOCK_AHEAD: Final = 300.0
"""Seconds an event's time may be ahead of the controller's clock. Servers of
one deployment agree within a second or two (NTP); five minutes forgives a
badly set clock without letting an agent file events in the future, where
they would sort after everything that really happened and outlive purges."""
TLS_POLL: Final = 5.0
"""Seconds between looks at the certificate, key, CA and CRL files: a
revocation reaches open agent connections within two polls (a change must be
seen settled twice) or at once on SIGHUP."""
STANDALONE_ROLES: Final = ("standard",)
"""Without a topology every server is a Standard Edition (``conclave serve --dir``)."""
MAX_WARNINGS: Final = 10
"""Warnings of one kind (malformed message, clamped time, host claimed) logged
in full; after that one in every 1000."""


@dataclass(frozen=True)
class AgentHost:
    """A host of the topology allowed to send events."""

    name: str
    """Its FQDN: the ``host`` of its events, and the name its certificate must carry."""
    roles: tuple[str, ...]
    """Roles as its servers report them (``standard`` for a Standard Edition Front End)."""


@dataclass(frozen=True)
class ControllerSettings:
    """Built from ``[logging_controller]`` by the caller."""

    host: str
    port: int
    store: Path
    retention: float
    cert: Path
    key: Path
    client_cas: tuple[Path, ...]
    agents: tuple[AgentHost, ...] | None = None
    """The topology's hosts; None without a topology (see the module doc)."""
    reload_poll: float = TLS_POLL


@dataclass(frozen=True)
class AgentIdentity:
    """Who is at the other end of an agent connection, from its certificate."""

    certificate: ServerIdentity
    hosts: tuple[AgentHost, ...]
    """What it may speak for, first the default: topology hosts it names, or
    (without a topology) one entry per name in the certificate."""

    @property
    def host(self) -> AgentHost:
        return self.hosts[0]


def agent_identity(der: bytes | None, agents: tuple[AgentHost, ...] | None) -> AgentIdentity:
    """The identity a verified agent certificate proves; :class:`PkiError` if it proves none."""
    if not der:
        raise PkiError("no certificate")
    certificate = server_identity(der)
    if agents is None:
        hosts = tuple(AgentHost(name, STANDALONE_ROLES) for name in certificate.names)
    else:
        hosts = tuple(h for h in agents if certificate.names_exactly(h.name))
        if not hosts:
            shown = ", ".join(certificate.names)
            raise PkiError(f"the certificate ({shown}) names no host of the topology")
    return AgentIdentity(certificate, hosts)


def vouch(
    event: dict[str, Any], identity: AgentIdentity, *, now: float, oldest: float
) -> list[str]:
    """Make ``event``'s host, role and time what the certificate and clock allow.

    Changes ``event`` in place and returns which fields were overridden (the
    claims are kept as ``claimed_host``, ``claimed_role``, ``claimed_time``).
    """
    changed: list[str] = []
    claimed_host = event.get("host")
    host = identity.host
    if isinstance(claimed_host, str):
        host = next((h for h in identity.hosts if h.name == claimed_host.lower().rstrip(".")), host)
    if claimed_host != host.name:
        if claimed_host not in (None, "", "-"):
            event["claimed_host"] = claimed_host
        event["host"] = host.name
        changed.append("host")
    claimed_role = event.get("role")
    if claimed_role not in host.roles:
        if claimed_role not in (None, ""):
            event["claimed_role"] = claimed_role
        event["role"] = host.roles[0]
        changed.append("role")
    ts = parse_time(event.get("time"))
    if ts is None or not oldest <= ts <= now + MAX_CLOCK_AHEAD:
        if event.get("time") is not None:
            event["claimed_time"] = event["time"]
        event["time"] = dt.datetime.fromtimestamp(now, dt.UTC).isoformat()
        changed.append("time")
    return changed


def controller_context(settings: ControllerSettings) -> ssl.SSLContext:
    """Server side of mutual TLS for agents; raises :class:`PkiError` on bad files."""
    cas = settings.client_cas
    context = server_context(settings.cert, settings.key, ca_path=cas[0], require_client_cert=True)
    for ca in cas[1:]:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise PkiError(f"cannot load CA certificates from {ca}: {exc}") from None
    crls = crl_paths(settings)
    if all(crl.is_file() for crl in crls):
        for crl in crls:
            load_crl_file(context, crl)
    else:
        missing = [str(c) for c in crls if not c.is_file()]
        log.warning("agent certificates not checked for revocation", missing_crls=missing)
    return context


def crl_paths(settings: ControllerSettings) -> list[Path]:
    """Each trusted CA's CRL: ``crl.pem`` beside its certificate."""
    return [ca.parent / "crl.pem" for ca in settings.client_cas]


def revoked_certificates(settings: ControllerSettings) -> set[tuple[x509.Name, int]]:
    """``(issuer, serial)`` of every certificate the trusted CAs' CRLs list.

    A CRL that is missing, unreadable or not signed by its CA lists nothing
    here (OpenSSL, which checks every handshake, fails closed on it).
    """
    revoked: set[tuple[x509.Name, int]] = set()
    for ca_path, crl_path in zip(settings.client_cas, crl_paths(settings), strict=True):
        if not crl_path.is_file():
            continue
        try:
            ca = load_certificate(ca_path)
            serials = revoked_serials(load_crl(crl_path, ca))
        except PkiError as exc:
            log.warning("agent crl unreadable", path=str(crl_path), reason=str(exc))
            continue
        revoked |= {(ca.subject, serial) for serial in serials}
    return revoked


class LoggingController:
    """Accept agents and store their events. ``await start()``, later ``await stop()``."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.store = LogStore(settings.store)
        self.port = settings.port
        self.received = 0
        self.malformed = 0
        self.clamped = 0
        """Events whose host, role or time the controller had to correct."""
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._identities: dict[asyncio.Task[Any], AgentIdentity] = {}
        self._own: deque[Mapping[str, Any]] = deque()
        self._own_scheduled = False
        self._purger: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._current: ssl.SSLContext | None = None
        self._signature: tuple[tuple[int, int, int] | None, ...] = ()
        self._pending: tuple[tuple[int, int, int] | None, ...] | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (logged as ``logging controller listening``)."""
        self._signature = self._files_signature()
        context = controller_context(self.settings)
        # New handshakes are moved onto the newest context (see reload_tls).
        self._current = context
        context.sni_callback = self._select
        logsetup.set_sink(self._own_event)
        self._server = await asyncio.start_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            ssl=context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        self._purger = loop.create_task(self._purge_loop())
        self._watcher = loop.create_task(self._watch_files())
        log.info(
            "logging controller listening",
            address=self.settings.host,
            port=self.port,
            store=str(self.settings.store),
            topology_hosts=None if self.settings.agents is None else len(self.settings.agents),
        )
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Closing the connections ends their handlers normally (a cancelled
        # handler task would be reported by asyncio's stream machinery).
        for writer in self._connections.values():
            writer.close()
        tasks = list(self._connections)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        for background in (self._purger, self._watcher):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        log.info("logging controller stopped", received=self.received)
        logsetup.set_sink(None)
        self._store_own()
        self.store.close()

    # -- certificates and revocation ----------------------------------------------------
    def _select(self, sslobj: Any, _server_name: str | None, context: ssl.SSLContext) -> None:
        """sni_callback (called for every ClientHello): use the newest context."""
        current = self._current
        if current is not None and context is not current:
            try:
                sslobj.context = current
            except Exception as exc:  # keep the context it started on rather than abort
                log.error("agent tls switch failed", reason=str(exc))

    def reload_tls(self, trigger: str) -> bool:
        """Re-read certificate, key, CAs and CRLs; close connections now revoked.

        A set of files that cannot be used is refused (the old context stays
        in use) and logged; the CRLs are still applied to open connections.
        Returns True when the new files were taken.
        """
        self._signature = self._files_signature()
        self._pending = None
        try:
            context = controller_context(self.settings)
        except PkiError as exc:
            log.error("agent tls reload refused", trigger=trigger, reason=str(exc))
            taken = False
        else:
            self._current = context
            log.info("agent tls reloaded", trigger=trigger)
            taken = True
        self._close_revoked()
        return taken

    def _close_revoked(self) -> None:
        revoked = revoked_certificates(self.settings)
        for task, identity in list(self._identities.items()):
            certificate = identity.certificate
            if (certificate.issuer, certificate.serial) in revoked:
                writer = self._connections.get(task)
                if writer is not None:
                    log.warning(
                        "agent disconnected",
                        reason="certificate revoked",
                        agent_host=identity.host.name,
                        serial=f"{certificate.serial:X}",
                    )
                    # At once: no TLS close handshake with a peer we no longer trust.
                    writer.transport.abort()

    def _files_signature(self) -> FileSignature:
        settings = self.settings
        return file_signature(
            [settings.cert, settings.key, *settings.client_cas, *crl_paths(settings)]
        )

    async def _watch_files(self) -> None:
        """Reload when the files changed and were seen unchanged on the next poll."""
        while True:
            await asyncio.sleep(self.settings.reload_poll)
            signature = self._files_signature()
            if signature == self._signature:
                self._pending = None
            elif signature != self._pending:
                self._pending = signature
            else:
                try:
                    self.reload_tls("file change")
                except Exception as exc:  # keep watching; the next change retries
                    log.error("agent tls reload failed", reason=str(exc))

    # -- our own events ------------------------------------------------------------------
    def _own_event(self, event: Mapping[str, Any]) -> None:
        name = str(event.get("event", ""))
        wanted = event.get("level") in FORWARDED_LEVELS or name in KEY_EVENTS
        if not (wanted or name.startswith(("logging controller", "agent "))):
            return
        if len(self._own) < MAX_OWN_PENDING:
            self._own.append(event)
        if not self._own_scheduled:
            self._own_scheduled = True
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(self._store_own)

    def _store_own(self) -> None:
        self._own_scheduled = False
        now = time.time()
        items = [Received(e, None, None, now) for e in self._own]
        self._own.clear()
        with contextlib.suppress(Exception):
            self.store.insert(items)

    # -- agents ----------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self._connections) >= MAX_AGENTS:
            log.warning("agent refused", peer=peer_text, reason="too many connections")
            writer.close()
            return
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        try:
            identity = agent_identity(der, self.settings.agents)
        except PkiError as exc:
            log.warning(
                "agent refused",
                peer=peer_text,
                certificate=_subject(writer.get_extra_info("peercert")),
                reason=str(exc),
            )
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
            return
        self._connections[task] = writer
        self._identities[task] = identity
        log.info(
            "agent connected",
            peer=peer_text,
            certificate=_subject(writer.get_extra_info("peercert")),
            agent_host=identity.host.name,
            serial=f"{identity.certificate.serial:X}",
        )
        try:
            if (identity.certificate.issuer, identity.certificate.serial) in (
                revoked_certificates(self.settings)
            ):  # revoked after the handshake's CRL was loaded, before a reload
                raise PkiError("certificate revoked")
            await self._serve(reader, writer, peer_text, identity)
        except (OSError, ConnectionError, SyslogError, sqlite3.Error, PkiError) as exc:
            # The agent keeps what was not acknowledged and sends it again.
            log.warning("agent connection closed", peer=peer_text, reason=str(exc))
        finally:
            self._connections.pop(task, None)
            self._identities.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
        log.info("agent disconnected", peer=peer_text)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        identity: AgentIdentity,
    ) -> None:
        framer = OctetCountingFramer()
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return
            items: list[Received] = []
            last_seq: int | None = None
            now = time.time()
            oldest = now - self.settings.retention
            for raw in framer.feed(data):  # a framing error ends the connection
                try:
                    message = parse_message(raw)
                except SyslogError as exc:
                    self.malformed += 1
                    if _worth_logging(self.malformed):
                        log.warning("malformed syslog message", peer=peer, reason=str(exc))
                    continue
                ours = message.structured.get(SD_ID, {})
                origin, seq = ours.get("origin"), _int(ours.get("seq"))
                if origin is None or seq is None:
                    origin = seq = None
                else:
                    last_seq = seq if last_seq is None else max(last_seq, seq)
                event = event_of(message)
                changed = vouch(event, identity, now=now, oldest=oldest)
                if changed:
                    self.clamped += 1
                    if _worth_logging(self.clamped):
                        log.warning(
                            "agent event corrected",
                            peer=peer,
                            agent_host=identity.host.name,
                            fields=changed,
                            claimed_host=event.get("claimed_host"),
                            claimed_role=event.get("claimed_role"),
                            claimed_time=event.get("claimed_time"),
                        )
                items.append(Received(event, origin, seq, now))
            if items:
                self.store.insert(items)
                self.received += len(items)
            if last_seq is not None:
                writer.write(f"ack {last_seq}\n".encode())
                await writer.drain()

    async def _purge_loop(self) -> None:
        while True:
            try:
                removed = self.store.purge_before(time.time() - self.settings.retention)
            except Exception as exc:
                log.warning("event purge failed", reason=str(exc))
            else:
                if removed:
                    log.info("events purged", removed=removed)
            await asyncio.sleep(PURGE_INTERVAL)


def _worth_logging(count: int) -> bool:
    return count <= MAX_WARNINGS or count % 1000 == 0


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and len(value) < 19 else None


def _subject(cert: object) -> str | None:
    if not isinstance(cert, dict):
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def run_controller(data_dir: Path, settings: ControllerSettings, *, host: str) -> None:
    """Run the controller in the foreground until SIGTERM or SIGINT."""
    import uvloop

    logsetup.configure(role="logging-controller", host=host)

    async def main() -> None:
        logsetup.log_loop_errors()
        controller = LoggingController(settings)
        await controller.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: controller.reload_tls("signal"))
        pid_file = Path(data_dir) / PID_FILE
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            await stop.wait()
        finally:
            await controller.stop()
            with contextlib.suppress(OSError):
                pid_file.unlink()

    uvloop.run(main())
