"""The topology: one document that describes a whole deployment.

Modules:

* :mod:`.model`: the pydantic model of ``topology.toml``;
* :mod:`.document`: reading and writing it; problems named by document path;
* :mod:`.catalogue`: the roles, and the exact ports each host opens;
* :mod:`.checks`: the document's meaning (``conclave topology check``);
* :mod:`.certs`: the certificate each host needs;
* :mod:`.publish`: DNS records, firewall rules, certificates (``publish``);
* :mod:`.planner`: a topology from a few answers (``plan``);
* :mod:`.diagram`: SVG and PNG drawings (``diagram``);
* :mod:`.provision`: a host's data directory, and its ``conclave.toml`` settings.

The best-practices analyzer that reads a topology, and also a live deployment
(its TLS contexts, its user store, the methods a Front End answers), sits
above the product in :mod:`conclave.audit`: the topology itself is data.

See docs/topology.md.
"""

from __future__ import annotations

from .checks import check_topology
from .document import Problem, TopologyError, dumps_topology, load_topology, loads_topology
from .model import HostRef, Topology

__all__ = [
    "HostRef",
    "Problem",
    "Topology",
    "TopologyError",
    "check_topology",
    "dumps_topology",
    "load_topology",
    "loads_topology",
]
