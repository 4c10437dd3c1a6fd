"""``conclave audit``: check a topology and a running deployment against best practice."""

from __future__ import annotations

import json
from pathlib import Path

import click

from conclave.audit import RULES, render_surface, render_text, run_audit

from .common import Command, fail


@click.command("audit", cls=Command)
@click.option(
    "--topology",
    "topology_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The topology to audit, with the data directories of its provisioned hosts.",
)
@click.option(
    "--dir",
    "data_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A data directory to audit as a Standard Edition (repeatable).",
)
@click.option("--surface", is_flag=True, help="Also list what others can reach, per host.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def audit_command(
    topology_path: Path | None, data_dirs: tuple[Path, ...], surface: bool, as_json: bool
) -> None:
    """Find insecure or needless settings; exit 1 when any finding is high or critical.

    Each finding has an id, a severity, what was found and where, why it
    matters and how to fix it (the rules: docs/audit-rules.md). --surface
    lists per host the ports, protocols, SIP methods, event packages and TLS
    versions that can be reached.
    """
    if topology_path is None and not data_dirs:
        raise fail("give --topology FILE and/or --dir DATA")
    for directory in data_dirs:
        if not (directory / "conclave.toml").exists():
            raise fail(f"{directory} is not a Conclave data directory (no conclave.toml)")
    if topology_path is not None and not topology_path.exists():
        raise fail(f"{topology_path}: file not found")
    report = run_audit(topology_path, list(data_dirs), surface=surface)
    if as_json:
        document: dict[str, object] = {
            "audited": report.audited,
            "failed": report.failed,
            "findings": [f.to_json() for f in report.findings],
        }
        if surface:
            document["surface"] = [s.to_json() for s in report.surfaces]
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(f"Audited: {', '.join(report.audited)}")
        if surface:
            click.echo("Surface:")
            click.echo(render_surface(report.surfaces), nl=False)
            click.echo("Findings:")
        click.echo(render_text(report.findings), nl=False)
    if report.failed:
        raise SystemExit(1)


__all__ = ["RULES", "audit_command"]
