"""``conclave audit``: the best-practices analyzer (Lync's BPA, security first).

:func:`run_audit` checks a topology (:mod:`.rules`), the data directory of
each of its provisioned hosts, and any other data directory given
(:mod:`.deployment`), including what a running server really listens on
(:mod:`.live`). Findings come from the catalogue in :mod:`.findings`
(docs/audit-rules.md). :mod:`.surface` answers ``--surface``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from conclave.config import ConfigError, load_config
from conclave.topology.document import TopologyError, load_topology
from conclave.topology.layout import host_dir

from .deployment import audit_data_dir
from .findings import RULES, Finding, failing, render_text, sort_findings
from .rules import audit_topology
from .surface import HostSurface, data_dir_surface, observe, render_surface, topology_surface
from .tls import policy_findings


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    surfaces: list[HostSurface] = field(default_factory=list)
    audited: list[str] = field(default_factory=list)
    """what was looked at: the topology file and data directories"""

    @property
    def failed(self) -> bool:
        return failing(self.findings)


def run_audit(
    topology_path: Path | None = None,
    data_dirs: list[Path] | None = None,
    *,
    now: dt.datetime | None = None,
    surface: bool = False,
) -> AuditReport:
    """Audit a topology and/or data directories (a ``conclave init`` directory is a
    Standard Edition). Raises :class:`TopologyError` if the topology cannot be read."""
    now = now or dt.datetime.now(dt.UTC)
    report = AuditReport()
    findings: list[Finding] = []
    if topology_path is not None:
        try:
            topology = load_topology(topology_path)
        except TopologyError as exc:
            findings += [
                Finding("TOPOLOGY-INVALID", p.message, f"{topology_path}: {p.path}")
                for p in exc.problems
            ]
            topology = None
        report.audited.append(str(topology_path))
        if topology is not None:
            findings += audit_topology(topology, topology_path, now)
            if surface:
                hosts = topology_surface(topology)
                for ref, host in zip(topology.hosts(), hosts, strict=True):
                    observe(host, host_dir(topology_path, topology, ref.name), ref.roles)
                report.surfaces += hosts
            threshold = (
                topology.policies.lockout.directory_threshold if topology.policies.lockout else 0
            )
            for ref in topology.hosts():
                directory = host_dir(topology_path, topology, ref.name)
                if not (directory / "conclave.toml").exists():
                    continue
                report.audited.append(str(directory))
                findings += audit_data_dir(
                    directory,
                    roles=ref.roles,
                    now=now,
                    standalone=False,
                    directory_threshold=threshold,
                )
    for directory in data_dirs or []:
        report.audited.append(str(directory))
        findings += audit_data_dir(directory, now=now)
        if surface:
            try:
                config = load_config(directory)
            except ConfigError:
                continue
            report.surfaces.append(data_dir_surface(directory, config, ("frontend",)))
    if topology_path is None:
        findings += policy_findings()
    report.findings = sort_findings(findings)
    return report


__all__ = [
    "RULES",
    "AuditReport",
    "Finding",
    "render_surface",
    "render_text",
    "run_audit",
]
