"""``conclave serve``: run the Standard Edition in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from conclave.pki.errors import PkiError
from conclave.store.errors import StoreError

from .common import data_dir_option, fail, load


@click.command("serve")
@data_dir_option
def serve_command(data_dir: Path) -> None:
    """Run the Standard Edition server until SIGTERM (graceful stop) or Ctrl-C."""
    config = load(data_dir)
    from conclave.server import serve

    try:
        serve(data_dir, config)
    except (PkiError, StoreError) as exc:
        raise fail(str(exc).splitlines()[0]) from None
    except OSError as exc:
        raise fail(f"cannot start: {exc.strerror or exc}") from None
