"""Pool pairing: the backup service and the partner's heartbeat (docs/pools.md).

Every Front End of a paired pool runs one :class:`PairingService`:

* **Listener** (``[pairing] listen``, mutual TLS): the partner pool's members connect
  with their server certificates; any other certificate (a user's, another server's)
  is closed before its first line is read. Each line is one JSON message: a
  ``snapshot`` of the partner's user data (kept in ``pool_backups``, the newest wins)
  or a ``heartbeat``. A line longer than :data:`MAX_LINE` ends the connection.
* **Sender**: connects to the partner's members in order and, every
  :data:`BACKUP_INTERVAL`, sends a snapshot when this pool's users, contacts or
  privacy rules changed (the change counters moved; at least every
  :data:`FULL_COPY_INTERVAL` anyway), else a heartbeat. Only one member of the pool
  sends snapshots (the first alive by name, from the pool's heartbeats); the others
  send heartbeats only. Replication lag (change to copy
  at the partner) is logged with each copy and exported as a metric.
* **Watchdog**: with ``failover = "automatic"``, when the partner has been silent for
  ``failover_after`` seconds, this pool takes its users over from the copy
  (:meth:`~conclave.store.pairing.PairingStore.take_over`; the Front Ends reload
  users within seconds). Manual failover (the default, as in Lync) is
  ``conclave pool failover POOL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog

from conclave.ops import metrics
from conclave.pki.errors import PkiError
from conclave.pki.identity import server_identity
from conclave.store.database import Database
from conclave.store.errors import StoreError
from conclave.store.generations import DIRECTORY, USERS, GenerationStore
from conclave.store.pairing import MAX_SNAPSHOT_BYTES, PairingStore

log = structlog.get_logger("conclave.cluster.pairing")

BACKUP_INTERVAL = 1.0
"""Seconds between messages to the partner (a copy when something changed, else a
heartbeat): the bound on replication lag, and the heartbeat's period."""
FULL_COPY_INTERVAL = 60.0
"""A copy is sent at least this often, changed or not (a partner that lost its copy)."""
MAX_LINE = MAX_SNAPSHOT_BYTES + 4096
"""Longest message line accepted from a partner."""
INLINE_DECODE = 64 * 1024
"""Messages longer than this (copies of a large pool) are decoded off the event loop."""
CONNECT_TIMEOUT = 3.0
"""Seconds to reach a partner member before trying the next."""

LAG = metrics.PAIRING_LAG
SILENT = metrics.PAIRING_SILENT


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PairingService:
    """One Front End's part in pairing its pool with the partner (module docstring)."""

    def __init__(
        self,
        *,
        pool: str,
        partner: str,
        db: Database,
        listen: tuple[str, int],
        partner_endpoints: list[tuple[str, str, int]],
        server_ssl: ssl.SSLContext,
        client_ssl: ssl.SSLContext,
        failover: str = "manual",
        failover_after: float = 120.0,
        on_takeover: Callable[[], object] | None = None,
        copies: Callable[[], bool] = lambda: True,
    ) -> None:
        self.pool = pool
        self.partner = partner
        self.store = PairingStore(db)
        self.generations = GenerationStore(db)
        self.listen = listen
        self.partner_endpoints = partner_endpoints
        """(FQDN, address, port) of each partner member's listener, in order."""
        self.partner_names = frozenset(name.lower() for name, _a, _p in partner_endpoints)
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.failover = failover
        self.failover_after = failover_after
        self.on_takeover = on_takeover
        self.copies = copies
        """True while this member is the one of its pool that sends the copies (the
        others send heartbeats only): one snapshot per change, not one per member."""
        self._server: asyncio.Server | None = None

    # -- the listener --------------------------------------------------------------------------
    async def start(self) -> None:
        host, port = self.listen
        self._server = await asyncio.start_server(
            self._serve, host, port, ssl=self.server_ssl, limit=MAX_LINE
        )
        log.info("pairing listener", address=f"{host}:{port}", partner=self.partner)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _peer(self, writer: asyncio.StreamWriter) -> str | None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None
        try:
            names = {n.lower() for n in server_identity(der).names}
        except PkiError:
            return None
        found = names & self.partner_names
        return min(found) if found else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = self._peer(writer)
        source = writer.get_extra_info("peername")
        try:
            if peer is None:
                log.warning("pairing connection refused", source=str(source and source[0]))
                return
            while line := await reader.readline():
                if not await self._receive(peer, line):
                    return
        except (ValueError, ConnectionError, OSError, asyncio.LimitOverrunError) as exc:
            log.warning(
                "pairing connection ended", peer=peer, reason=str(exc) or type(exc).__name__
            )
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _receive(self, peer: str, line: bytes) -> bool:
        try:
            big = len(line) > INLINE_DECODE
            message = await asyncio.to_thread(json.loads, line) if big else json.loads(line)
            kind, pool = message["type"], message["pool"]
        except (ValueError, KeyError, TypeError):
            log.warning("pairing message malformed", peer=peer)
            return False
        if pool != self.partner:
            log.warning("pairing message for another pool", peer=peer, pool=str(pool)[:64])
            return False
        now = _now()
        try:
            if kind == "snapshot":
                changed = dt.datetime.fromisoformat(message["changed_at"])
                text = await asyncio.to_thread(
                    json.dumps, message["snapshot"], separators=(",", ":")
                )
                await self.store.save_backup(pool, text, changed, now)
                lag = max(0.0, (now - changed).total_seconds())
                LAG.labels(pool).set(lag)
                SILENT.labels(pool).set(0)
                users = len(message["snapshot"].get("users", []))
                log.info("pool backup received", pool=pool, users=users, lag_seconds=round(lag, 3))
            elif kind == "heartbeat":
                await self.store.heard(pool, now)
                SILENT.labels(pool).set(0)
            else:
                log.warning("pairing message of unknown type", peer=peer)
                return False
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            log.warning("pairing message not kept", peer=peer, reason=str(exc))
        return True

    # -- the sender ----------------------------------------------------------------------------
    async def run_sender(self) -> None:
        while True:
            writer = await self._connect()
            if writer is None:
                await asyncio.sleep(BACKUP_INTERVAL)
                continue
            try:
                await self._send_loop(writer)
            except (ConnectionError, OSError, StoreError) as exc:
                log.warning("pairing copy interrupted", partner=self.partner, reason=str(exc))
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            await asyncio.sleep(BACKUP_INTERVAL)

    async def _connect(self) -> asyncio.StreamWriter | None:
        for name, address, port in self.partner_endpoints:
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        address, port, ssl=self.client_ssl, server_hostname=name
                    ),
                    CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError, ssl.SSLError):
                continue
            log.info("pairing connected", partner=self.partner, member=name)
            return writer
        return None

    async def _send_loop(self, writer: asyncio.StreamWriter) -> None:
        sent: tuple[int, int] | None = None
        sent_at = 0.0
        while True:
            message: dict[str, Any] = {
                "type": "heartbeat", "pool": self.pool, "at": _now().isoformat()
            }  # fmt: skip
            if not self.copies():
                sent = None  # copy at once if this member becomes the one that copies
            else:
                counters = (
                    await self.generations.get(USERS),
                    await self.generations.get(DIRECTORY),
                )
                if counters != sent or time.monotonic() - sent_at > FULL_COPY_INTERVAL:
                    message = {
                        "type": "snapshot", "pool": self.pool, "changed_at": _now().isoformat(),
                        "snapshot": await self.store.snapshot(),
                    }  # fmt: skip
                    sent, sent_at = counters, time.monotonic()
            # A large pool's copy is megabytes of JSON: encoded off the event loop.
            line = await asyncio.to_thread(json.dumps, message, separators=(",", ":"))
            writer.write(line.encode() + b"\n")
            await writer.drain()
            await asyncio.sleep(BACKUP_INTERVAL)

    # -- the watchdog --------------------------------------------------------------------------
    async def run_watchdog(self) -> None:
        while True:
            await asyncio.sleep(BACKUP_INTERVAL)
            try:
                await self._watch()
            except StoreError as exc:
                log.warning("pairing watchdog failed", reason=str(exc))

    async def _watch(self) -> None:
        heard_at = await self.store.heard_at(self.partner)  # one small row, every second
        if heard_at is None:
            return
        silent = (_now() - heard_at).total_seconds()
        SILENT.labels(self.partner).set(silent)
        if self.failover != "automatic" or silent < self.failover_after:
            return
        if self.partner in await self.store.failed_over():
            return
        backup = await self.store.backup(self.partner)  # the copy itself only now
        if backup is None:
            return
        try:
            taken = await self.store.take_over(self.partner, backup.snapshot, _now())
        except StoreError as exc:  # another member of this pool did it first
            log.info("pool failover not needed", pool=self.partner, reason=str(exc))
            return
        log.warning(
            "pool failover", pool=self.partner, to=self.pool, users=taken,
            trigger="automatic", silent_seconds=round(silent, 1),
        )  # fmt: skip
        if self.on_takeover is not None:
            self.on_takeover()
