"""``topology diagram``: the drawing shows every host, zone and link, as SVG and PNG."""

from __future__ import annotations

import os
import shutil

import pytest

from conclave.topology.diagram import DiagramError, diagram, render
from conclave.topology.document import topology_from_mapping
from conclave.topology.model import Topology

from .helpers import base, enterprise, with_edge


def require_dot() -> None:
    """Graphviz's dot renders the drawings: under CI=true its absence fails the test."""
    if shutil.which("dot"):
        return
    reason = "Graphviz dot not found (install the Debian package graphviz)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)  # outside CI only: under CI=true it failed above


def topology() -> Topology:
    doc = with_edge(enterprise(enterprise(base()), "ee2", "dr", "10.2.0"))
    doc["pools"]["ee1"]["paired_with"] = "ee2"
    return topology_from_mapping(doc)


def test_the_graph_holds_zones_sites_pools_hosts_and_links() -> None:
    source = diagram(topology()).source
    for text in ("Internet", "Perimeter network", "Internal network", "site hq", "site dr"):
        assert text in source
    for host in ("fe1", "log1", "edge1", "ee1-fe1", "ee2-fe1"):
        assert f"{host}\\n{host}.example.test" in source
    assert "pool pairing" in source
    assert "remote_users -> host_edge1" in source
    assert "host_edge1 -> host_fe1" in source  # the edge's next hop: the Front Ends
    assert "syslog/TLS 6514" in source
    assert "SIP/TLS TCP 10.0.0.1:5061" in source


def test_svg_and_png() -> None:
    require_dot()
    svg = render(topology(), "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
    assert b"edge1.example.test" in svg
    png = render(topology(), "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_unknown_format() -> None:
    with pytest.raises(DiagramError, match="unknown format"):
        render(topology(), "gif")
