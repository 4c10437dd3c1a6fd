"""``conclave topology check|plan|publish|diagram|provision``: the deployment as one document."""

from __future__ import annotations

import json
from pathlib import Path

import click

from conclave.config import ConfigError
from conclave.pki.errors import PkiError
from conclave.store.errors import StoreError
from conclave.topology.checks import check_topology, errors
from conclave.topology.document import TopologyError, dumps_topology, load_topology
from conclave.topology.model import Topology

from .common import Group, fail

topology_argument = click.argument(
    "topology_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path)
)


@click.group("topology", cls=Group)
def topology_group() -> None:
    """Plan, check, publish, draw and provision a deployment's topology (topology.toml)."""


def _load_checked(path: Path) -> Topology:
    """The topology, or a one-line error naming the first problem."""
    try:
        topology = load_topology(path)
    except TopologyError as exc:
        extra = len(exc.problems) - 1
        raise fail(str(exc) + (f" (and {extra} more)" if extra > 0 else "")) from None
    found = errors(check_topology(topology, path))
    if found:
        more = (
            f" (and {len(found) - 1} more: run conclave topology check)" if len(found) > 1 else ""
        )
        raise fail(f"{path}: {found[0]}{more}")
    return topology


@topology_group.command("check")
@topology_argument
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every problem.")
def check(topology_path: Path, as_json: bool) -> None:
    """Check the document's schema and meaning; exit 1 when anything is wrong.

    Each problem names its path in the document (pools.eu1.members[2].fqdn).
    Warnings are printed but do not fail the check.
    """
    topology: Topology | None = None
    try:
        topology = load_topology(topology_path)
        problems = check_topology(topology, topology_path)
    except TopologyError as exc:
        problems = exc.problems
    bad = errors(problems)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(topology_path),
                    "ok": not bad,
                    "problems": [
                        {"level": p.level, "path": p.path, "message": p.message} for p in problems
                    ],
                },
                indent=2,
            )
        )
    else:
        for problem in problems:
            click.echo(f"{topology_path}: {problem.level}: {problem}")
        if not bad and topology is not None:
            hosts = topology.hosts()
            click.echo(
                f"{topology_path}: ok: {len(topology.sites)} site(s), "
                f"{len(topology.pools)} pool(s), {len(hosts)} host(s)"
            )
    if bad:
        raise SystemExit(1)


@topology_group.command("plan")
@click.option(
    "--answers",
    "answers_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Answers as TOML or JSON (.json) instead of questions.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("topology.toml"),
    show_default=True,
    help="Where to write the topology.",
)
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
def plan_command(answers_path: Path | None, output: Path, force: bool) -> None:
    """Propose a topology sized from stated capacity figures (questions, or --answers)."""
    from conclave.topology.planner import FIGURES, answers_from_mapping, load_answers, plan

    if output.exists() and not force:
        raise fail(f"{output} exists (use --force to replace it)")
    try:
        answers = load_answers(answers_path) if answers_path else answers_from_mapping(_ask())
        result = plan(answers)
    except TopologyError as exc:
        raise fail(str(exc)) from None
    figures = [f"{label}: {value:,}" for label, value in FIGURES]
    if answers.users_per_frontend != FIGURES[0][1]:
        figures.insert(0, f"users per Front End (from the answers): {answers.users_per_frontend:,}")
    header = "\n".join(
        [
            "Planned by `conclave topology plan`. Capacity figures used:",
            *(f"  {line}" for line in figures),
            "Sizing:",
            *(f"  {line}" for line in result.sizing),
            "Before publishing:",
            *(f"  {line}" for line in result.notes),
        ]
    )
    try:
        output.write_text(dumps_topology(result.topology, header=header), encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo("Capacity figures:")
    for line in figures:
        click.echo(f"  {line}")
    click.echo("Sizing:")
    for line in result.sizing:
        click.echo(f"  {line}")
    click.echo("Before publishing:")
    for line in result.notes:
        click.echo(f"  {line}")
    hosts = result.topology.hosts()
    click.echo(f"Wrote {output}: {len(result.topology.pools)} pool(s), {len(hosts)} host(s).")
    click.echo(f"Next: conclave topology check {output}")


def _ask() -> dict[str, object]:
    """The planning questions, asked one by one."""
    from conclave.topology.planner import site_name

    organisation = click.prompt("Organisation name", default="Example organisation")
    domain = click.prompt("SIP domain users sign in to (user@DOMAIN)")
    users = click.prompt("How many users", type=click.IntRange(1, 10_000_000))
    sites_text = click.prompt("Sites, comma-separated", default="main")
    sites = list(dict.fromkeys(site_name(s) for s in sites_text.split(",") if s.strip()))
    remote_access = click.confirm("Do users sign in from the internet", default=False)
    federation = click.confirm("Federation with partner organisations", default=False)
    partners: list[str] = []
    if federation:
        typed = click.prompt(
            "Partner domains to allow, comma-separated (none: federation stays off)", default=""
        )
        partners = list(dict.fromkeys(p.strip().lower() for p in typed.split(",") if p.strip()))
    return {
        "organisation": organisation,
        "domain": domain,
        "users": users,
        "sites": sites or ["main"],
        "remote_access": remote_access,
        "federation": federation,
        "partners": partners,
        "high_availability": click.confirm("High availability", default=False),
        "compliance_archiving": click.confirm("Compliance archiving of IM", default=False),
    }


@topology_group.command("publish")
@topology_argument
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write publish.txt, publish.json, each DNS zone as dnsmasq configuration, each "
    "edge's turnserver.conf and each Patroni back end's configurations into this directory "
    "instead of printing.",
)
@click.option(
    "--config-dir",
    default="/etc/patroni",
    show_default=True,
    help="Where the Patroni files will be on the database servers (the configurations "
    "name their post-bootstrap script there).",
)
def publish_command(
    topology_path: Path, as_json: bool, output: Path | None, config_dir: str
) -> None:
    """What the network must provide: DNS records, firewall rules per zone, certificates."""
    from conclave.pki import PkiError
    from conclave.pki.files import write_private_file
    from conclave.topology.dnsconf import ZONES, dnsmasq_conf
    from conclave.topology.publish import publish, render_json
    from conclave.topology.relay import relay_secret, relays_in_use, turnserver_conf

    topology = _load_checked(topology_path)
    publication = publish(topology, topology_path)
    if output is None:
        click.echo(render_json(publication) if as_json else publication.to_text(), nl=False)
        return
    written = [output / "publish.txt", output / "publish.json"]
    try:
        output.mkdir(parents=True, exist_ok=True)
        written[0].write_text(publication.to_text(), encoding="utf-8")
        written[1].write_text(render_json(publication), encoding="utf-8")
        for zone in ZONES:
            if any(r.zone == zone for r in publication.dns):
                path = output / f"dns-{zone}.dnsmasq.conf"
                path.write_text(dnsmasq_conf(publication.dns, zone), encoding="utf-8")
                written.append(path)
        relays = relays_in_use(topology)
        secret = relay_secret(topology_path) if relays else ""
        for ref in relays:  # coturn for each edge; it holds the shared secret: 0600
            path = output / f"turnserver-{ref.name}.conf"
            write_private_file(path, turnserver_conf(topology, ref, secret).encode())
            written.append(path)
        written += write_patroni(topology, topology_path, output, config_dir)
    except (OSError, PkiError) as exc:
        raise fail(f"cannot write to {output}: {getattr(exc, 'strerror', None) or exc}") from None
    click.echo("Wrote " + ", ".join(str(p) for p in written))


@topology_group.command("diagram")
@topology_argument
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output path without extension (default: FILE without .toml).",
)
@click.option(
    "--format",
    "formats",
    default="svg,png",
    show_default=True,
    help="Comma-separated: svg, png, dot (the Graphviz source).",
)
def diagram_command(topology_path: Path, output: Path | None, formats: str) -> None:
    """Draw sites, pools, hosts, roles, zones and links as SVG and PNG (Graphviz)."""
    from conclave.topology.diagram import DiagramError, diagram, render

    wanted = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in ("svg", "png", "dot")]
    if unknown or not wanted:
        raise fail(
            f"--format: unknown format {unknown[0] if unknown else '(none)'!r}; use svg,png,dot"
        )
    topology = _load_checked(topology_path)
    stem = output or topology_path.with_suffix("")
    written: list[Path] = []
    try:
        for fmt in wanted:
            path = stem.with_name(f"{stem.name}.{fmt}")
            data = diagram(topology).source.encode() if fmt == "dot" else render(topology, fmt)
            path.write_bytes(data)
            written.append(path)
    except DiagramError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write: {exc.strerror or exc}") from None
    click.echo("Wrote " + ", ".join(str(p) for p in written))


@topology_group.command("provision")
@topology_argument
@click.option("--host", "hosts", multiple=True, help="A host to provision (repeatable).")
@click.option("--all", "every", is_flag=True, help="Every host whose roles can run.")
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The data directory (one --host only; default hosts/NAME beside FILE).",
)
def provision_command(
    topology_path: Path, hosts: tuple[str, ...], every: bool, data_dir: Path | None
) -> None:
    """Make or update hosts' data directories: config, certificates from the org CA, database."""
    from conclave.topology.provision import provision

    topology = _load_checked(topology_path)
    if every == bool(hosts):
        raise fail("give --host NAME (repeatable) or --all")
    if data_dir is not None and len(hosts) != 1:
        raise fail("--dir goes with exactly one --host")
    refs = topology.hosts()
    if hosts:
        refs = []
        for name in hosts:
            ref = topology.host(name)
            if ref is None:
                names = ", ".join(r.name for r in topology.hosts())
                raise fail(f"no host {name!r} in {topology_path} (hosts: {names})")
            refs.append(ref)
    for ref in refs:
        try:
            done = provision(topology, topology_path, ref, data_dir=data_dir)
        except (PkiError, ConfigError, StoreError) as exc:
            raise fail(f"{ref.name}: {str(exc).splitlines()[0]}") from None
        if done.skipped:
            click.echo(f"{ref.name}: skipped: {done.skipped}")
            continue
        click.echo(f"{ref.name}: {done.data_dir}")
        for action in done.actions:
            click.echo(f"  {action}")
        click.echo(
            f"  next: conclave serve --topology {topology_path} --host {ref.name}"
            + (f" --dir {data_dir}" if data_dir else "")
        )


def write_patroni(
    topology: Topology, topology_path: Path, output: Path, config_dir: str
) -> list[Path]:
    """Each Patroni back end's configuration per server and its post-bootstrap script."""
    from conclave.pki.files import write_private_file
    from conclave.topology.backend import backend_secret, patroni_config, post_bootstrap_script

    written: list[Path] = []
    for name, pool in topology.pools.items():
        if pool.back_end is None or pool.back_end.failover != "patroni":
            continue
        secret = backend_secret(topology_path, name)
        for server in pool.back_end.servers:
            path = output / f"patroni-{name}-{server.name}.yml"
            text = patroni_config(topology, name, server.name, secret, config_dir.rstrip("/"))
            write_private_file(path, text.encode())
            written.append(path)
        script = output / f"patroni-{name}-post-bootstrap.sh"  # the owner's password: 0700
        write_private_file(script, post_bootstrap_script(topology, name, secret).encode())
        script.chmod(0o700)
        written.append(script)
    return written
