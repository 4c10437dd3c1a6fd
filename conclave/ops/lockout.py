"""The account lockout's state on disk, and how ``conclave lockout`` talks to a server.

The running server holds the lockout in memory
(:class:`~conclave.core.lockout.AccountLockout`: no sign-in waits on a disk)
and writes it to :data:`STATE_FILE` in its data directory whenever an account
is locked or unlocked, every :data:`SAVE_INTERVAL` while familiar addresses
change, and at stop; it reads it back at start, so a restart neither unlocks
an account under attack nor forgets where its user signs in from.

``conclave lockout status`` reads that file. ``conclave lockout reset USER``
appends the name to :data:`RESETS_FILE` and sends SIGHUP; the server takes
the names, unlocks them, logs "account unlocked" and saves the state, which
the command waits for. Both files hold user names and addresses: mode 0600,
like the rest of the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog

from conclave.config import LockoutSection
from conclave.core.lockout import AccountLockout
from conclave.ops import metrics
from conclave.pki import PkiError
from conclave.pki.files import write_private_file

log = structlog.get_logger("conclave.lockout")

STATE_FILE: Final = "lockout.json"
RESETS_FILE: Final = "lockout-resets"
SAVE_INTERVAL: Final = 60.0
"""Seconds between saves when only familiar addresses changed (a lock or an unlock
is saved at once): a crash forgets at most this long of learning where users sign in."""
MAX_RESET_REQUESTS: Final = 10_000
"""Names taken from one reset file: a runaway script cannot make the server read
an unbounded file."""


def lockout_from_config(section: LockoutSection) -> AccountLockout:
    """The account lockout ``[lockout]`` describes (the server's, and the command's view)."""
    return AccountLockout(
        threshold=section.threshold,
        window=section.window,
        duration=section.duration,
        familiar_days=section.familiar_days,
        internal_networks=section.internal_networks,
    )


class LockoutFileError(Exception):
    """The state file cannot be written or read."""


def save_state(data_dir: Path, snapshot: dict[str, Any]) -> None:
    """Atomically replace the state file (mode 0600)."""
    try:
        write_private_file(Path(data_dir) / STATE_FILE, (json.dumps(snapshot) + "\n").encode())
    except PkiError as exc:
        raise LockoutFileError(str(exc)) from None


def load_state(data_dir: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none. Raises LockoutFileError when unreadable."""
    path = Path(data_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LockoutFileError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise LockoutFileError(f"{path} does not hold a lockout state")
    return data


def request_reset(data_dir: Path, user: str) -> None:
    """Ask the server on ``data_dir`` to unlock ``user`` (the caller sends SIGHUP)."""
    path = Path(data_dir) / RESETS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (user.strip() + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def take_resets(data_dir: Path) -> list[str]:
    """The names asked for since the last call; the request file is removed."""
    path = Path(data_dir) / RESETS_FILE
    taken = path.with_name(f".{RESETS_FILE}.{os.getpid()}.taken")
    try:
        os.replace(path, taken)  # a name appended from now on waits for the next signal
    except FileNotFoundError:
        return []
    try:
        with taken.open(encoding="utf-8", errors="replace") as handle:
            names = [line.strip() for line in itertools.islice(handle, MAX_RESET_REQUESTS)]
    finally:
        with contextlib.suppress(OSError):
            taken.unlink()
    return list(dict.fromkeys(n for n in names if n))


class LockoutKeeper:
    """Keeps a server's :class:`~conclave.core.lockout.AccountLockout` on disk and
    applies the resets ``conclave lockout reset`` asks for."""

    def __init__(
        self, data_dir: Path, lockout: AccountLockout, clock: Callable[[], float] = time.time
    ) -> None:
        self.data_dir = Path(data_dir)
        self.lockout = lockout
        self.clock = clock
        self._dirty = asyncio.Event()

    def load(self) -> int:
        """Restore the saved state at start; returns how many accounts (0 when none)."""
        try:
            data = load_state(self.data_dir)
        except LockoutFileError as exc:
            log.warning("lockout state not restored", reason=str(exc))
            return 0
        return 0 if data is None else self.lockout.restore(data)

    def changed(self) -> None:
        """An account was locked: save at once (from the event loop)."""
        self._dirty.set()

    def save(self) -> None:
        try:
            save_state(self.data_dir, self.lockout.snapshot(self.clock()))
        except LockoutFileError as exc:
            log.warning("lockout state not saved", reason=str(exc))

    async def run(self, interval: float = SAVE_INTERVAL) -> None:
        """Save after every lock, and every ``interval`` for what sign-ins learn."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), interval)
            self._dirty.clear()
            self.save()

    def apply_resets(self) -> list[str]:
        """Unlock the users ``conclave lockout reset`` asked for; save; return them."""
        names = take_resets(self.data_dir)
        now = self.clock()
        for name in names:
            was_locked = self.lockout.reset(name, now)
            if was_locked:
                metrics.ACCOUNT_UNLOCKS.inc()
            log.warning("account unlocked", user=name, was_locked=was_locked, by="administrator")
        if names:
            self.save()
        return names
