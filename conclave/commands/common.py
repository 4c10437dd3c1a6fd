"""Helpers shared by the CLI commands: data directory, errors, signalling the server."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from conclave.config import Config, ConfigError, load_config
from conclave.pki.errors import PkiError
from conclave.store.errors import StoreError

T = TypeVar("T")

PID_FILE = "conclave.pid"

data_dir_option = click.option(
    "--dir",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The deployment's data directory (made by `conclave init`).",
)


class CliError(click.ClickException):
    """A one-line error and exit status 1."""

    def show(self, file: object = None) -> None:
        click.echo(f"conclave: error: {self.format_message()}", err=True)


def fail(message: str) -> CliError:
    return CliError(message)


def load(data_dir: Path) -> Config:
    """The deployment's config, or a one-line error."""
    if not (data_dir / "conclave.toml").exists():
        raise fail(f"{data_dir} is not a Conclave data directory (run `conclave init` first)")
    try:
        return load_config(data_dir)
    except ConfigError as exc:
        raise fail(str(exc).replace("\n", "; ")) from None


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning the expected failures into one-line errors."""

    async def main() -> T:
        return await factory()

    try:
        return asyncio.run(main())
    except (StoreError, PkiError, ConfigError) as exc:
        raise fail(str(exc).splitlines()[0]) from None


def notify_server(data_dir: Path) -> bool:
    """Tell a running server on this data directory to reload at once (SIGHUP).

    The server then re-reads users, contact lists and privacy rules (and its
    TLS certificate). Returns True if a live server was signalled. A missed
    signal only delays the change: the store write already bumped a change
    counter, which the server polls every few seconds (5 s) and answers by
    reloading what changed.
    """
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True
