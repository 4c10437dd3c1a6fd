"""Role selection: ``conclave serve --topology FILE --host NAME`` runs exactly the host's roles.

The topology names the host's roles; each runs as its own process with its
own listeners, so a role that is not assigned opens no port and registers no
handler:

* ``frontend``: the Front End server (:class:`conclave.server.Server`), as a
  Standard Edition (embedded SQLite) in a standard pool or against the
  pool's PostgreSQL back end in an enterprise pool. Its config is the host's
  ``conclave.toml`` with the settings the topology owns laid over it
  (:func:`conclave.topology.provision.host_settings`): domain, host name,
  transports, bind address and ports, presence on or off (a disabled feature
  is absent from Allow and Allow-Events), lockout, archiving, the admin
  interface, and the logging controller its agent sends to;
* ``logging-controller``: the centralized logging controller
  (:func:`conclave.ops.controller.run_controller`), listening where the
  topology says;
* ``edge``: the Access Edge (:mod:`conclave.edge_server`): remote users'
  sign-ins relayed to the pool, the inside hidden (docs/edge.md);
* ``director``: the Director (:mod:`conclave.director_server`): authenticates
  every request before it reaches a pool, then sends it to the user's home pool;
* ``mediation``, ``chat``: not built yet. ``serve``
  refuses them with a one-line message and starts nothing, never a stub.

A host with several buildable roles runs one child process per role
(``serve ... --role ROLE``) and forwards SIGTERM and SIGINT to them; when one
stops, the others are stopped too and the exit status is the first failure.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import structlog

from conclave.config import Config, ConfigError, load_config
from conclave.ops import log as logsetup
from conclave.supervisor import Supervisor, Then
from conclave.topology.catalogue import AVAILABLE_ROLES, ROLE_INFO
from conclave.topology.checks import check_topology, errors
from conclave.topology.document import TopologyError, load_topology
from conclave.topology.layout import host_dir
from conclave.topology.model import HostRef, Topology
from conclave.topology.provision import differences, topology_owned
from conclave.workers import Worker

log = structlog.get_logger("conclave.roles")


class RoleError(Exception):
    """The host cannot be served as asked; the message is one line for the operator."""


@dataclass(frozen=True)
class HostPlan:
    """What ``serve`` will run for one host."""

    topology_path: Path
    topology: Topology
    ref: HostRef
    data_dir: Path

    @property
    def roles(self) -> tuple[str, ...]:
        return self.ref.roles


def not_available_message(role: str, host: str) -> str:
    info = ROLE_INFO[role]
    return (
        f"role {role} ({info.lync}) is not available yet on host {host}: the topology "
        "describes and checks it, but `conclave serve` cannot run it until it is built"
    )


def prepare(topology_path: Path, host_name: str, data_dir: Path | None = None) -> HostPlan:
    """Read and check the topology and find the host; :class:`RoleError` if it cannot be served.

    Every refusal happens here, before anything listens: a topology with
    errors, an unknown host, a role that is not available yet, a data
    directory that was not provisioned.
    """
    try:
        topology = load_topology(topology_path)
    except TopologyError as exc:
        raise RoleError(str(exc)) from None
    found = errors(check_topology(topology, topology_path))
    if found:
        more = (
            f" (and {len(found) - 1} more: run conclave topology check)" if len(found) > 1 else ""
        )
        raise RoleError(f"{topology_path}: {found[0]}{more}")
    ref = topology.host(host_name)
    if ref is None:
        names = ", ".join(r.name for r in topology.hosts())
        raise RoleError(f"no host {host_name!r} in {topology_path} (hosts: {names})")
    for role in ref.roles:
        if role not in AVAILABLE_ROLES:
            raise RoleError(not_available_message(role, ref.name))
    directory = data_dir or host_dir(topology_path, topology, ref.name)
    if not (directory / "conclave.toml").exists():
        raise RoleError(
            f"{directory} is not provisioned: run conclave topology provision "
            f"{topology_path} --host {ref.name}"
        )
    return HostPlan(Path(topology_path), topology, ref, directory)


def host_config(plan: HostPlan) -> tuple[Config, list[str]]:
    """The host's config with the topology's settings applied, and which keys changed."""
    try:
        on_disk = load_config(plan.data_dir)
        config = topology_owned(
            on_disk, plan.topology, plan.ref, source=str(plan.data_dir),
            topology_path=plan.topology_path,
        )  # fmt: skip
    except ConfigError as exc:
        raise RoleError(str(exc).replace("\n", "; ")) from None
    changed = differences(on_disk, config)
    # The admin console draws and audits the topology the host was started from.
    admin = config.admin.model_copy(update={"topology": str(plan.topology_path.resolve())})
    return config.model_copy(update={"admin": admin}), changed


def serve_host(
    plan: HostPlan,
    role: str | None = None,
    *,
    workers: int | None = None,
    worker: int | None = None,
) -> int:
    """Run the host's roles (or just ``role``) in the foreground; returns the exit status.
    ``workers``: Front End processes (default: the topology's, ``[pool] workers``);
    ``worker``: run that one of them only (the workers' supervisor asks for it)."""
    if workers is not None and "frontend" not in plan.roles:
        raise RoleError(
            f"--workers applies to Front Ends; host {plan.ref.name} runs {', '.join(plan.roles)}"
        )
    if role is not None:
        if role not in plan.roles:
            raise RoleError(
                f"host {plan.ref.name} has no role {role} (roles: {', '.join(plan.roles)})"
            )
        return run_role(plan, role, workers=workers, worker=worker)
    if len(plan.roles) == 1:
        return run_role(plan, plan.roles[0], workers=workers, worker=worker)
    return supervise(plan, workers)


def run_role(
    plan: HostPlan, role: str, *, workers: int | None = None, worker: int | None = None
) -> int:
    """Run one role in this process until SIGTERM or SIGINT; returns the exit status."""
    config, changed = host_config(plan)
    if role == "frontend":
        name = "standard" if plan.ref.pool.edition == "standard" else "frontend"
        count = workers if workers is not None else config.pool.workers
        if count > 1 and worker is None:
            from conclave.workers import WorkersError, run_workers

            command = [
                sys.executable, "-m", "conclave", "serve",
                "--topology", str(plan.topology_path), "--host", plan.ref.name,
                "--dir", str(plan.data_dir), "--role", "frontend",
            ]  # fmt: skip
            try:
                return run_workers(plan.data_dir, config, count, command)
            except WorkersError as exc:
                raise RoleError(str(exc)) from None
        logsetup.configure(
            level=config.logging.level, role=name, host=config.server.host, worker=worker
        )
        if not worker:
            _applied(plan, role, changed)
        from conclave.server import serve

        serve(
            plan.data_dir, config, role=name,
            worker=None if worker is None else Worker(worker, count),
        )  # fmt: skip
        return 0
    elif role == "logging-controller":
        from conclave.ops.controller import run_controller
        from conclave.ops.runtime import controller_settings

        logsetup.configure(level=config.logging.level, role=role, host=config.server.host)
        _applied(plan, role, changed)
        settings = controller_settings(plan.data_dir, config, topology=plan.topology)
        run_controller(plan.data_dir, settings, host=config.server.host)
        return 0
    elif role == "edge":
        from conclave.edge_server import run_edge

        logsetup.configure(level=config.logging.level, role=role, host=config.server.host)
        _applied(plan, role, changed)
        run_edge(plan.data_dir, config)
        return 0
    elif role == "director":
        from conclave.director_server import run_director

        logsetup.configure(level=config.logging.level, role=role, host=config.server.host)
        _applied(plan, role, changed)
        run_director(plan.data_dir, config)
        return 0
    else:  # prepare() refused it already; never start a stand-in
        raise RoleError(not_available_message(role, plan.ref.name))


def _applied(plan: HostPlan, role: str, changed: list[str]) -> None:
    log.info(
        "topology applied",
        topology=str(plan.topology_path),
        host_name=plan.ref.name,
        pool=plan.ref.pool_name,
        site=plan.ref.pool.site,
        serving=role,
        overridden=changed,
    )


def supervise(plan: HostPlan, workers: int | None = None) -> int:
    """One child process per role; signals are forwarded; the first exit stops the rest."""
    logsetup.configure(role="host", host=plan.ref.host.fqdn)
    where = plan.ref.name
    status = 0

    def started(role: str, pid: int) -> None:
        log.info("role started", host_name=where, serving=role, pid=pid)

    def exited(role: str, pid: int, code: int, _stopping: bool) -> Then:
        nonlocal status
        log.info("role stopped", host_name=where, serving=role, pid=pid, status=code)
        if code != 0 and status == 0:
            status = code if code > 0 else 1
        return Then.STOP

    with Supervisor[str](started=started) as host:
        for role in plan.roles:
            command = [
                sys.executable, "-m", "conclave", "serve",
                "--topology", str(plan.topology_path), "--host", plan.ref.name,
                "--dir", str(plan.data_dir), "--role", role,
            ]  # fmt: skip
            if role == "frontend" and workers is not None:
                command += ["--workers", str(workers)]
            host.start(role, command)
        host.run(exited)
    return status
