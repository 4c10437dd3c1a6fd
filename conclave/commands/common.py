"""Helpers shared by the CLI commands: data directory, errors, signalling the server."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import click

from conclave.config import PID_FILE, Config, ConfigError, load_config
from conclave.pki.errors import PkiError
from conclave.store.errors import StoreError

T = TypeVar("T")


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


class UsageLine(CliError):
    """A usage error as one line, with click's exit status for usage errors (2)."""

    exit_code = 2


class Command(click.Command):
    """A ``conclave`` command whose usage errors are one line.

    An option that takes a value never takes another of the command's
    options as that value: ``certs issue --client --dir d1`` is refused as
    ``--client takes a value (--client USER), not the option --dir`` instead
    of naming a user ``--dir`` and then missing ``--dir``. Click's usage
    errors (a missing option, a bad value, an unknown option) keep their
    text and exit status 2, on one line with where to find help.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        _refuse_swallowed_options(self, ctx, args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise UsageLine(f"{exc.format_message()} (see `{ctx.command_path} --help`)") from None


class Group(click.Group):
    r"""A ``conclave`` command group: its commands and subgroups are :class:`Command`\ s."""

    command_class = Command
    group_class = type  # subgroups are of this class too


def _refuse_swallowed_options(command: click.Command, ctx: click.Context, args: list[str]) -> None:
    options = [p for p in command.get_params(ctx) if isinstance(p, click.Option)]
    names = {name for p in options for name in (*p.opts, *p.secondary_opts)}
    takes_value = {name: p for p in options if not p.is_flag and not p.count for name in p.opts}
    for arg, following in itertools.pairwise(args):
        if arg == "--":
            return
        option = takes_value.get(arg)
        if option is not None and following.partition("=")[0] in names:
            metavar = option.metavar or (option.name or "value").upper()
            raise UsageLine(f"{arg} takes a value ({arg} {metavar}), not the option {following}")


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


PROC: Final = Path("/proc")
"""Where Linux describes processes: a pid is only signalled after it is checked here."""

PID_CLOCK_SLACK: Final = 2.0
"""Seconds a server's start time (``/proc/PID/stat``, whole-second boot time plus
clock ticks) may appear to follow the moment it wrote its pid file. A process
that started later than that cannot have written the file: its pid was reused."""


def server_pid(data_dir: Path) -> int | None:
    """The pid of the live ``conclave serve`` that wrote ``DATA/conclave.pid``, or None.

    A stale pid file must never make us signal an unrelated process (SIGHUP
    kills most programs), so the pid is used only when all of these hold:

    * it is a positive number other than ours (``0`` and ``-1`` would signal
      a whole process group or every process we may signal);
    * the process runs ``conclave serve`` (its command line, ``/proc/PID/cmdline``);
    * when that command line names ``--dir``, it is this data directory
      (resolved against the process's working directory);
    * the process started before the pid file was written (a later one got
      the pid after our server died).

    Without ``/proc`` nothing can be checked and None is returned: the server
    notices changes by its own polling a few seconds later.
    """
    pid_file = Path(data_dir) / PID_FILE
    try:
        written = pid_file.stat().st_mtime
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    proc = PROC / str(pid)
    try:
        args = (proc / "cmdline").read_bytes().split(b"\0")
        started = _start_time(proc)
        cwd = Path(os.readlink(proc / "cwd"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    if not _runs_conclave_serve(args):
        return None
    if started > written + PID_CLOCK_SLACK:
        return None
    directory = _option(args, "--dir")
    if directory is not None and (cwd / os.fsdecode(directory)).resolve() != (
        Path(data_dir).resolve()
    ):
        return None
    return pid


def _runs_conclave_serve(args: list[bytes]) -> bool:
    """``… conclave serve …``: the program (a script or ``-m conclave``) then ``serve``."""
    return any(
        os.path.basename(arg) == b"conclave" and args[i + 1 : i + 2] == [b"serve"]
        for i, arg in enumerate(args)
    )


def _option(args: list[bytes], name: str) -> bytes | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a command line, if given."""
    flag = name.encode()
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + b"="):
            return arg[len(flag) + 1 :]
    return None


def _start_time(proc: Path) -> float:
    """When the process started, in seconds since the epoch (``/proc/PID/stat`` field 22)."""
    stat = (proc / "stat").read_text(encoding="ascii", errors="replace")
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[19])
    boot = next(
        int(line.split()[1])
        for line in (PROC / "stat").read_text(encoding="ascii").splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def signal_server(data_dir: Path, signum: int = signal.SIGHUP) -> int | None:
    """Send ``signum`` to the server of ``data_dir`` (checked by :func:`server_pid`).

    Returns the pid signalled, or None when no server of ours runs there.
    """
    pid = server_pid(data_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, signum)
    except OSError:
        return None
    return pid


def notify_server(data_dir: Path) -> bool:
    """Tell a running server on this data directory to reload at once (SIGHUP).

    The server then re-reads users, contact lists and privacy rules (and its
    TLS certificate). Returns True if a live server was signalled. A missed
    signal only delays the change: the store write already bumped a change
    counter, which the server polls every few seconds (5 s) and answers by
    reloading what changed.
    """
    return signal_server(data_dir) is not None
