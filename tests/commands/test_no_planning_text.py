"""No user-facing text mentions the project's issues or its planning.

Users read the CLI's help, its messages (``topology check``'s warnings among
them), ``python -m bench --help`` and the documentation for users (the
README and docs/, except the developers' architecture page). "Issue" as the
verb of certificates (``certs issue``, "the CA issues") is fine; an issue as
a piece of planned work ("issue 8", "a later issue") is not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from conclave.cli import main
from conclave.topology import check_topology
from conclave.topology.document import topology_from_mapping
from tests.topology.helpers import base, enterprise, host

ROOT = Path(__file__).resolve().parents[2]
PLANNING = re.compile(
    r"\bissues?\s*#?\d+"  # issue 8, issues 8, 14, issue #8
    r"|\b(?:a|an|the|this|that|later|next|future|separate|own|topology)\s+issues?\b"
    r"|\bin a later\b|\bcomes? in a later\b",
    re.IGNORECASE,
)
DEVELOPER_DOCS = {"architecture.md"}
"""How the code is built, for those who change it (it may cite the work it describes)."""


def commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from commands(sub, (*path, name))


def help_text(path: tuple[str, ...]) -> str:
    command: click.Command = main
    ctx = click.Context(main, info_name="conclave")
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
        ctx = click.Context(command, info_name=name, parent=ctx)
    return command.get_help(ctx)


@pytest.mark.parametrize("path", list(commands(main)), ids=lambda p: " ".join(p) or "conclave")
def test_cli_help(path: tuple[str, ...]) -> None:
    found = PLANNING.findall(help_text(path))
    assert not found, found


def test_bench_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    )  # fmt: skip
    assert "Scenarios:" in proc.stdout
    assert not PLANNING.findall(proc.stdout)


def user_docs() -> list[Path]:
    docs = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in DEVELOPER_DOCS]
    return [ROOT / "README.md", *docs]


@pytest.mark.parametrize("doc", user_docs(), ids=lambda p: p.name)
def test_user_documentation(doc: Path) -> None:
    lines = [
        f"{doc.name}:{number}: {line}"
        for number, line in enumerate(doc.read_text().splitlines(), start=1)
        if PLANNING.search(line)
    ]
    assert not lines, "\n".join(lines)


def test_the_topology_warning_about_pool_state() -> None:
    doc = enterprise(base())
    doc["pools"]["ee1"]["members"].append(host("ee1-fe2", "10.1.0.2", ["frontend"]))
    (warning,) = [
        p for p in check_topology(topology_from_mapping(doc)) if "Front Ends" in p.message
    ]
    assert "pool state" in warning.message
    assert not PLANNING.findall(warning.message), warning.message


def test_the_pattern_tells_planning_from_certificates() -> None:
    assert PLANNING.search("(Redis pool state comes in a later issue)")
    assert PLANNING.search("Scenarios (issue 8): 1 REGISTER")
    assert PLANNING.search("the topology issue will assign real homes")
    assert not PLANNING.search("conclave certs issue --client USER")
    assert not PLANNING.search("The same CA issues users' client certificates")
    assert not PLANNING.search("Issue rsyslog's certificate from the deployment's CA")
