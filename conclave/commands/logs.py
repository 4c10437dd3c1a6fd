"""``conclave logs``: search the controller's events, run the controller, debug sessions."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import click

from conclave.config import Config
from conclave.config_fields import parse_duration
from conclave.ops.logstore import DEFAULT_LIMIT, open_readonly, parse_time
from conclave.ops.runtime import DEBUG_SIGNAL, controller_settings, split_endpoint
from conclave.ops.trace import add_session, read_sessions, remove_sessions
from conclave.pki.errors import PkiError

from .common import Group, data_dir_option, fail, load, signal_server

_SHOWN_FIRST = ("time", "host", "role", "level", "event")
_HIDDEN = {*_SHOWN_FIRST, "logger", "message"}


@click.group("logs", cls=Group)
def logs_group() -> None:
    """Centralized logging: search every server's events, the controller, debug traces."""


# --- search --------------------------------------------------------------------------------


def _when(text: str | None, option: str) -> float | None:
    """Seconds since the epoch from ISO 8601 (UTC unless it says) or a duration ago ("10m")."""
    if text is None:
        return None
    when = parse_time(text)
    if when is not None:
        return when
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        raise fail(
            f"{option}: use an ISO 8601 time (2025-01-31T12:00:00Z) or an age (10m, 2h)"
        ) from None


def _line(event: dict[str, Any]) -> str:
    head = " ".join(str(event.get(k, "-")) for k in _SHOWN_FIRST)
    rest = " ".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) or ' ' in v else v}"
        for k, v in event.items()
        if k not in _HIDDEN and v is not None
    )
    line = f"{head} {rest}".rstrip()
    message = event.get("message")
    if isinstance(message, str) and message:
        line += "\n" + "\n".join("    " + m.rstrip("\r") for m in message.rstrip().split("\n"))
    return line


def _store_path(data_dir: Path, config: Config) -> Path:
    return config.path(data_dir, config.logging_controller.store)


@logs_group.command("search")
@data_dir_option
@click.option("--call-id", default=None, help="Events of this Call-ID.")
@click.option("--user", default=None, help="Events of this user (name or name@domain).")
@click.option("--conversation", default=None, help="Events of this conversation id.")
@click.option("--since", default=None, help="From this time (ISO 8601) or age (10m, 2h, 7d).")
@click.option("--until", default=None, help="Up to this time (ISO 8601) or age.")
@click.option("--text", default=None, help="Events whose data contains this text.")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def search(
    data_dir: Path,
    call_id: str | None,
    user: str | None,
    conversation: str | None,
    since: str | None,
    until: str | None,
    text: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Search the events the controller in DATA stored, from every server, in time order."""
    config = load(data_dir)
    try:
        store = open_readonly(_store_path(data_dir, config))
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    try:
        events = store.search(
            call_id=call_id,
            user=user,
            conversation_id=conversation,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            text=text,
            limit=limit,
        )
    finally:
        store.close()
    for event in events:
        if as_json:
            click.echo(json.dumps(event, ensure_ascii=False, default=str))
        else:
            click.echo(_line(event))


# --- the controller ------------------------------------------------------------------------


@logs_group.command("controller")
@data_dir_option
@click.option(
    "--listen",
    default=None,
    help="host:port for agents (default: [logging_controller] listen; port 0: a free one).",
)
@click.option(
    "--topology",
    "topology_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Accept events only from this topology's hosts (default: any server "
    "certificate of a trusted CA, as for a Standard Edition deployment).",
)
def controller(data_dir: Path, listen: str | None, topology_path: Path | None) -> None:
    """Run the logging controller (the logging-controller role) until SIGTERM or Ctrl-C.

    Only servers may send: a certificate from a trusted CA that is a server
    certificate (a user's client certificate is refused), naming a host of
    the topology when one is given. SIGHUP re-reads certificates and CRLs.
    """
    from conclave.ops.controller import run_controller

    config = load(data_dir)
    topology = None
    if topology_path is not None:
        from conclave.topology.document import TopologyError, load_topology

        try:
            topology = load_topology(topology_path)
        except TopologyError as exc:
            raise fail(str(exc).splitlines()[0]) from None
    if listen is not None:
        try:
            host, port = split_endpoint(listen)
            ipaddress.ip_address(host)
            if port > 65535:
                raise ValueError
        except ValueError:
            raise fail(f"--listen: must be IP:port (IPv6 as [::1]:port), not {listen!r}") from None
    settings = controller_settings(data_dir, config, listen=listen, topology=topology)
    try:
        run_controller(data_dir, settings, host=config.server.host)
    except PkiError as exc:
        raise fail(str(exc).splitlines()[0]) from None
    except OSError as exc:
        where = f"[{settings.host}]" if ":" in settings.host else settings.host
        raise fail(
            f"cannot start the controller on {where}:{settings.port}: {exc.strerror or exc}"
        ) from None


# --- debug sessions ------------------------------------------------------------------------


@logs_group.group("debug")
def debug_group() -> None:
    """On-demand debug: full SIP traces of one user or call, for a bounded time."""


def _signal(data_dir: Path) -> int | None:
    """SIGUSR1 to the server running on DATA; its pid, or None if none is running.

    The server also polls the control file, so a signal that cannot be sent
    only delays the change by a couple of seconds.
    """
    return signal_server(data_dir, DEBUG_SIGNAL)  # never a stale pid's new owner


def _until(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@debug_group.command("start")
@data_dir_option
@click.option("--user", default=None, help="Trace this user's messages.")
@click.option("--call-id", default=None, help="Trace the messages of this Call-ID.")
@click.option("--for", "duration", default="10m", show_default=True, help="How long (max 24h).")
def debug_start(data_dir: Path, user: str | None, call_id: str | None, duration: str) -> None:
    """Start tracing; the server stops by itself when the time is up."""
    load(data_dir)
    if (user is None) == (call_id is None):
        raise fail("give --user or --call-id (one of them)")
    try:
        seconds = parse_duration(duration)
        session = add_session(data_dir, seconds=seconds, user=user, call_id=call_id)
    except ValueError as exc:
        raise fail(f"--for: {exc}" if "duration" in str(exc) else str(exc)) from None
    pid = _signal(data_dir)
    click.echo(f"Debug session {session.id}: {session.describe()} until {_until(session.until)}")
    if pid is None:
        click.echo("No server is running on this data directory: it starts with the server.")
    else:
        click.echo(f"Server {pid} told; traces appear as 'sip trace' events.")


@debug_group.command("stop")
@data_dir_option
@click.option("--user", default=None, help="Stop the sessions of this user only.")
@click.option("--call-id", default=None, help="Stop the sessions of this Call-ID only.")
def debug_stop(data_dir: Path, user: str | None, call_id: str | None) -> None:
    """Stop debug sessions (all of them unless --user or --call-id says which)."""
    load(data_dir)
    removed = remove_sessions(data_dir, user=user, call_id=call_id)
    _signal(data_dir)
    click.echo(f"Stopped {len(removed)} debug session(s).")


@debug_group.command("status")
@data_dir_option
def debug_status(data_dir: Path) -> None:
    """List the debug sessions and when each ends."""
    load(data_dir)
    now = time.time()
    sessions = read_sessions(data_dir)
    if not any(s.until > now for s in sessions):
        click.echo("No debug session is active.")
    for session in sessions:
        state = "active" if session.until > now else "ended"
        click.echo(f"{session.id} {session.describe()} until {_until(session.until)} ({state})")
