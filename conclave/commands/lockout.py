"""``conclave lockout …``: which accounts are locked, and unlocking them.

The running server keeps the account lockout in memory and saves it in the
data directory (``lockout.json``) at once when an account is locked or
unlocked, and every minute otherwise, so ``status`` shows locks as they are
and failure counts up to a minute old. ``reset`` asks the running server to
unlock (SIGHUP) and waits for it; with no server running it edits the saved
state, which the next start reads.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import click

from conclave.config import Config
from conclave.core.lockout import AccountLockout, AccountStatus
from conclave.ops.lockout import (
    RESETS_FILE,
    STATE_FILE,
    LockoutFileError,
    load_state,
    lockout_from_config,
    request_reset,
    save_state,
)

from .common import Group, data_dir_option, fail, load, signal_server

RESET_WAIT = 10.0
"""Seconds ``reset`` waits for the running server to take the request."""


def _lockout(config: Config, data_dir: Path) -> AccountLockout:
    lockout = lockout_from_config(config.lockout)
    try:
        state = load_state(data_dir)
    except LockoutFileError as exc:
        raise fail(str(exc)) from None
    if state is not None:
        lockout.restore(state)
    return lockout


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe(status: AccountStatus, now: float) -> str:
    locks = [
        f"{access} access locked until {_when(until)} ({(until - now) / 60:.0f} min)"
        for access, until in status.locked_until.items()
    ]
    failures = ", ".join(f"{n} {access}" for access, n in status.failures.items())
    parts = [*locks] or ["not locked"]
    if failures:
        parts.append(f"recent failures: {failures}")
    if status.familiar_sources:
        parts.append("familiar: " + ", ".join(status.familiar_sources))
    return f"{status.user}: " + "; ".join(parts)


def _as_json(status: AccountStatus) -> dict[str, object]:
    return {
        "user": status.user,
        "locked_until": {k: _when(v) for k, v in status.locked_until.items()},
        "failures": dict(status.failures),
        "familiar_sources": list(status.familiar_sources),
    }


@click.group("lockout", cls=Group)
def lockout_group() -> None:
    """Accounts locked after failed sign-ins (familiar and unfamiliar sources apart)."""


@lockout_group.command("status")
@click.argument("user", required=False)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array of accounts.")
def status_command(user: str | None, data_dir: Path, as_json: bool) -> None:
    """Locked accounts and recent failures (or USER's state, locked or not)."""
    config = load(data_dir)
    now = time.time()
    found = _lockout(config, data_dir).status(now, user)
    if as_json:
        click.echo(json.dumps([_as_json(s) for s in found], indent=2))
        return
    if not (data_dir / STATE_FILE).exists():
        click.echo("no lockout state saved yet (no server has run here, or nothing happened)")
    elif not found:
        click.echo("no account is locked or has recent failures")
    for status in found:
        click.echo(_describe(status, now))


@lockout_group.command("reset")
@click.argument("user")
@data_dir_option
def reset_command(user: str, data_dir: Path) -> None:
    """Unlock USER (every kind of access) and forget its failures."""
    config = load(data_dir)
    before = _lockout(config, data_dir).status(time.time(), user)[0]
    locked = bool(before.locked_until)
    state = data_dir / STATE_FILE
    stamp = state.stat().st_mtime_ns if state.exists() else 0
    request_reset(data_dir, user)
    if signal_server(data_dir) is None:
        # No server: take the request back and edit the saved state for the next start.
        (data_dir / RESETS_FILE).unlink(missing_ok=True)
        lockout = _lockout(config, data_dir)
        lockout.reset(user, time.time())
        try:
            save_state(data_dir, lockout.snapshot(time.time()))
        except LockoutFileError as exc:
            raise fail(str(exc)) from None
    else:
        deadline = time.monotonic() + RESET_WAIT
        while (data_dir / RESETS_FILE).exists() or (
            state.exists() and state.stat().st_mtime_ns == stamp
        ):
            if time.monotonic() > deadline:
                raise fail(f"the server on {data_dir} did not take the reset in {RESET_WAIT:g}s")
            time.sleep(0.05)
    click.echo(f"{before.user}: unlocked" if locked else f"{before.user}: was not locked")
