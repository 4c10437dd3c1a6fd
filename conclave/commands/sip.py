"""``conclave sip …``: protocol tools."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from conclave.sip.lint import judge

from .common import Group


@click.group("sip", cls=Group)
def sip_group() -> None:
    """SIP protocol tools."""


@sip_group.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def sip_lint(files: tuple[Path, ...], as_json: bool) -> None:
    """Parse each FILE as one raw SIP message and judge it as the server would.

    Prints "FILE: ok", "FILE: malformed: REASON" or "FILE: reject STATUS: REASON".
    Exits 0 when every file is ok, 1 otherwise, 2 on usage errors.
    """
    bad = False
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            click.echo(f"conclave sip lint: cannot read {path}: {exc.strerror}", err=True)
            sys.exit(2)
        verdict = judge(data)
        bad = bad or verdict.kind != "ok"
        if as_json:
            obj = {
                "file": str(path),
                "verdict": verdict.kind,
                "status": verdict.status,
                "reason": verdict.reason or None,
            }
            click.echo(json.dumps(obj))
        else:
            click.echo(f"{path}: {verdict.describe()}")
    sys.exit(1 if bad else 0)
