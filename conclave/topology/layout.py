"""Where a topology's files live on disk.

Everything is relative to the directory holding ``topology.toml``::

    topology.toml
    ca/                 the organisation's internal CA ([files] ca); its key never leaves it
    hosts/NAME/         each host's data directory ([files] hosts), made by
                        ``conclave topology provision``: conclave.toml, ca/ca.crt and
                        ca/crl.pem (copies), tls/server.crt and .key, conclave.db
                        (Standard Edition only)

``conclave serve --topology FILE --host NAME`` uses ``hosts/NAME`` unless
``--dir`` names another data directory.
"""

from __future__ import annotations

from pathlib import Path

from .model import HostRef, Topology

SERVER_CERT = "tls/server.crt"
SERVER_KEY = "tls/server.key"


def base_dir(topology_path: Path) -> Path:
    """The directory the document's relative paths start from."""
    return Path(topology_path).resolve().parent


def resolve(topology_path: Path, relative: str) -> Path:
    """A path from the document (``certificate``, ``files.ca``) made absolute."""
    candidate = Path(relative).expanduser()
    return candidate if candidate.is_absolute() else base_dir(topology_path) / candidate


def ca_dir(topology_path: Path, topology: Topology) -> Path:
    """The organisation's CA directory (``[files] ca``)."""
    return resolve(topology_path, topology.files.ca)


def host_dir(topology_path: Path, topology: Topology, name: str) -> Path:
    """The default data directory of host ``name`` (``[files] hosts``/NAME)."""
    return resolve(topology_path, topology.files.hosts) / name


def certificate_in_use(topology_path: Path, topology: Topology, ref: HostRef) -> Path | None:
    """The internal certificate the host presents: the file the document names, else the
    one provisioned in its data directory, else None (not provisioned yet)."""
    if ref.host.certificate:
        return resolve(topology_path, ref.host.certificate)
    provisioned = host_dir(topology_path, topology, ref.name) / SERVER_CERT
    return provisioned if provisioned.exists() else None
