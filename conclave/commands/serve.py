"""``conclave serve``: run the Standard Edition, or the roles a topology gives one host."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import click

from conclave.config_perimeter import MAX_WORKERS
from conclave.ops.admin import AdminListenError
from conclave.pki.errors import PkiError
from conclave.store.errors import StoreError
from conclave.transport import TransportError

from .common import CliError, fail, load, server_pid


@click.command("serve")
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The deployment's data directory (made by `conclave init`, or by "
    "`conclave topology provision`: hosts/NAME beside the topology by default).",
)
@click.option(
    "--topology",
    "topology_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve the roles this topology gives to --host.",
)
@click.option("--host", "host_name", default=None, help="The topology's host to serve.")
@click.option("--role", default=None, hidden=True, help="Run one of the host's roles only.")
@click.option(
    "--workers",
    type=click.IntRange(1, MAX_WORKERS),
    default=None,
    help="Front End processes on this host (default: [pool] workers, 1); several share "
    "the SIP listeners and need the pool state in Redis (docs/pools.md).",
)
@click.option("--worker", type=int, default=None, hidden=True, help="Run one worker only.")
def serve_command(
    data_dir: Path | None,
    topology_path: Path | None,
    host_name: str | None,
    role: str | None,
    workers: int | None,
    worker: int | None,
) -> None:
    """Run the server until SIGTERM (graceful stop) or Ctrl-C.

    With --dir alone: the Standard Edition of that data directory. With
    --topology FILE --host NAME: exactly the roles the topology gives NAME,
    each as its own process; a role that is not built yet is refused.
    With --workers N, N Front End processes share the host's SIP listeners.
    """
    if worker is not None and (workers is None or not 0 <= worker < workers):
        raise click.UsageError("--worker I needs --workers N with 0 <= I < N")
    if topology_path is None:
        if host_name is not None or role is not None:
            raise click.UsageError("--host and --role need --topology FILE")
        if data_dir is None:
            raise click.UsageError("Missing option '--dir' (or give --topology FILE --host NAME).")
        _serve_standard(data_dir, workers, worker)
        return
    if host_name is None:
        raise click.UsageError("--topology needs --host NAME")
    from conclave.roles import RoleError, prepare, serve_host

    plan = None
    try:
        plan = prepare(topology_path, host_name, data_dir)
        status = serve_host(plan, role, workers=workers, worker=worker)
    except RoleError as exc:
        raise fail(str(exc)) from None
    except (PkiError, StoreError) as exc:
        raise fail(str(exc).splitlines()[0]) from None
    except (TransportError, OSError) as exc:
        raise cannot_start(exc, plan.data_dir if plan else data_dir) from None
    if status:
        sys.exit(status)


def _serve_standard(data_dir: Path, workers: int | None, worker: int | None) -> None:
    config = load(data_dir)
    from conclave.server import serve
    from conclave.workers import Worker, WorkersError, run_workers, worker_command

    count = workers if workers is not None else config.pool.workers
    try:
        if count > 1 and worker is None:
            status = run_workers(data_dir, config, count, worker_command(data_dir))
            if status:
                sys.exit(status)
            return
        serve(data_dir, config, worker=None if worker is None else Worker(worker, count))
    except WorkersError as exc:
        raise fail(str(exc)) from None
    except (PkiError, StoreError) as exc:
        raise fail(str(exc).splitlines()[0]) from None
    except (TransportError, OSError) as exc:
        raise cannot_start(exc, data_dir) from None


def cannot_start(exc: TransportError | OSError, data_dir: Path | None) -> CliError:
    """One line for a server that could not open its sockets (or another OS failure).

    A busy address says whether this data directory's own server holds it
    (``conclave.pid``, checked by :func:`~conclave.commands.common.server_pid`);
    an address the machine does not have points at ``[transports] bind``.
    """
    section = "transports"
    if isinstance(exc, TransportError):
        text = str(exc)  # "cannot listen on tls 127.0.0.1:5061: Address already in use"
    elif isinstance(exc, AdminListenError):
        text, section = exc.strerror or str(exc), "admin"
    else:
        text = f"cannot start: {exc.strerror or exc}"
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    code = cause.errno if isinstance(cause, OSError) else None
    config = "conclave.toml" if data_dir is None else str(data_dir / "conclave.toml")
    if code == errno.EADDRINUSE:
        pid = None if data_dir is None else server_pid(data_dir)
        if pid is not None:
            return fail(f"{text} (the server for {data_dir} is already running, pid {pid})")
        return fail(f"{text} (by another program: choose another port in [{section}] of {config})")
    if code == errno.EADDRNOTAVAIL:
        return fail(f"{text} (not an address of this machine: see [{section}] bind in {config})")
    return fail(text)
