"""``conclave serve``: run the Standard Edition, or the roles a topology gives one host."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from conclave.pki.errors import PkiError
from conclave.store.errors import StoreError

from .common import fail, load


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
def serve_command(
    data_dir: Path | None, topology_path: Path | None, host_name: str | None, role: str | None
) -> None:
    """Run the server until SIGTERM (graceful stop) or Ctrl-C.

    With --dir alone: the Standard Edition of that data directory. With
    --topology FILE --host NAME: exactly the roles the topology gives NAME,
    each as its own process; a role that is not built yet is refused.
    """
    if topology_path is None:
        if host_name is not None or role is not None:
            raise click.UsageError("--host and --role need --topology FILE")
        if data_dir is None:
            raise click.UsageError("Missing option '--dir' (or give --topology FILE --host NAME).")
        _serve_standard(data_dir)
        return
    if host_name is None:
        raise click.UsageError("--topology needs --host NAME")
    from conclave.roles import RoleError, prepare, serve_host

    try:
        plan = prepare(topology_path, host_name, data_dir)
        status = serve_host(plan, role)
    except RoleError as exc:
        raise fail(str(exc)) from None
    except (PkiError, StoreError) as exc:
        raise fail(str(exc).splitlines()[0]) from None
    except OSError as exc:
        raise fail(f"cannot start: {exc.strerror or exc}") from None
    if status:
        sys.exit(status)


def _serve_standard(data_dir: Path) -> None:
    config = load(data_dir)
    from conclave.server import serve

    try:
        serve(data_dir, config)
    except (PkiError, StoreError) as exc:
        raise fail(str(exc).splitlines()[0]) from None
    except OSError as exc:
        raise fail(f"cannot start: {exc.strerror or exc}") from None
