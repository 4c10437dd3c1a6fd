"""Reading and writing ``topology.toml``; problems that name their path in the document.

:func:`load_topology` parses and validates the shape (:mod:`.model`); a bad
document raises :class:`TopologyError` whose ``problems`` each name the
exact path, for example::

    pools.eu1.members[2].fqdn: must be a fully qualified DNS name such as host.example.com

:func:`dumps_topology` writes a document back as TOML that loads equal.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from conclave.config import error_message

from .model import Topology

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a topology: where (a document path), what, and how bad."""

    path: str
    message: str
    level: Level = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TopologyError(Exception):
    """The document cannot be read or is not a valid topology.

    ``problems`` lists every fault; the message holds the first.
    """

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        first = self.problems[0] if self.problems else Problem("(document)", "invalid")
        super().__init__(f"{source}: {first}")


def path_of(loc: Iterable[int | str]) -> str:
    """``pools.eu1.members[2].fqdn`` from a pydantic location tuple."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue  # a bad table key: the key itself ends the path
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def problem_from_error(error: Mapping[str, Any]) -> Problem:
    """A :class:`Problem` from one pydantic error, with a readable message."""
    message = error_message(error)
    if "[key]" in error["loc"]:
        message = f"bad name: {message}"
    return Problem(path_of(error["loc"]), message)


def topology_from_mapping(data: Mapping[str, Any], *, source: str = "topology") -> Topology:
    """Validate parsed TOML; :class:`TopologyError` lists every bad path."""
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(source, [problem_from_error(e) for e in exc.errors()]) from None


def loads_topology(text: str, *, source: str = "topology") -> Topology:
    """Parse and validate TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(source, [Problem("(document)", f"invalid TOML: {exc}")]) from None
    return topology_from_mapping(data, source=source)


def load_topology(path: Path) -> Topology:
    """Read and validate the topology file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(str(path), [Problem("(document)", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(str(path), [Problem("(document)", f"cannot read: {exc}")]) from None
    return loads_topology(text, source=str(path))


# --- writing ---------------------------------------------------------------------------

_ESCAPES = {i: f"\\u{i:04X}" for i in (*range(0x20), 0x7F)}
_ESCAPES |= {ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t"}


def _key(key: str) -> str:
    bare = key.replace("-", "").replace("_", "").isalnum() and key.isascii()
    return key if bare else '"' + key.translate(_ESCAPES) + '"'


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_table(v) for v in value)


def dumps_toml(data: Mapping[str, Any], *, header: str = "") -> str:
    """TOML for nested tables, arrays of tables and plain values (what topologies hold)."""
    lines: list[str] = [f"# {line}" if line else "#" for line in header.splitlines()]

    def table(prefix: str, body: Mapping[str, Any], array: bool = False) -> None:
        plain = [(k, v) for k, v in body.items() if not (_is_table(v) or _is_table_array(v))]
        nested = [(k, v) for k, v in body.items() if _is_table(v) or _is_table_array(v)]
        if prefix and (array or plain or not nested):  # a table of tables needs no header
            if lines:
                lines.append("")
            lines.append(f"[[{prefix}]]" if array else f"[{prefix}]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in plain)
        for key, value in nested:
            name = f"{prefix}.{_key(key)}" if prefix else _key(key)
            if _is_table_array(value):
                for item in value:
                    table(name, item, array=True)
            else:
                table(name, value)

    table("", data)
    return "\n".join(lines).strip("\n") + "\n"


def topology_mapping(topology: Topology) -> dict[str, Any]:
    """The document as plain data, leaving out what equals its default."""
    # Durations serialise as their spelling ("10m"), which loads back equal.
    return topology.model_dump(mode="python", exclude_defaults=True)


def dumps_topology(topology: Topology, *, header: str = "") -> str:
    """``topology`` as TOML that :func:`loads_topology` reads back equal."""
    return dumps_toml(topology_mapping(topology), header=header)


__all__ = [
    "Problem",
    "TopologyError",
    "dumps_toml",
    "dumps_topology",
    "load_topology",
    "loads_topology",
    "path_of",
    "problem_from_error",
    "topology_from_mapping",
]
