"""Sampling profiles of the Conclave process with py-spy, summarised as text.

``Profiler(pid, path)`` runs ``py-spy record --format raw`` (collapsed
stacks: ``frame;frame;... count``) alongside a scenario; :func:`summarise`
reads the file back into the functions with the most samples, both *self*
(the innermost frame) and *inclusive* (anywhere on the stack). py-spy
needs ptrace rights (root, or kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

RATE = 250
"""Samples per second: enough resolution, little overhead on the profiled process."""


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy recording one process until :meth:`stop`; a no-op without py-spy."""

    def __init__(self, pid: int, output: Path) -> None:
        self.pid, self.output = pid, output
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Profiler:
        binary = py_spy()
        if binary is None:
            return self
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(self.pid), "--rate", str(RATE), "--format", "raw",
             "--output", str(self.output), "--nonblocking"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(self.output.with_suffix(".log")).open("wb"),
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> Profiler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _where(frame: str) -> tuple[str, str]:
    """("func", "pkg/module.py") from py-spy's "func (pkg/module.py:123)"."""
    name, _, where = frame.partition(" (")
    return name, where.rsplit(":", 1)[0].rstrip(")")


def _package(path: str) -> str:
    """Where time goes, coarsely: ``conclave/<layer>``, a library, or the runtime."""
    parts = path.split("/")
    if parts[0] == "conclave" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else path


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """The samples in a raw py-spy file, by package (self), by function (self) and
    by Conclave function (inclusive: anywhere on the stack)."""
    self_counts: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"samples": 0, "packages": [], "self": [], "conclave_inclusive": []}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue  # py-spy can split a frame of generated code over lines
        count = int(count_text)
        frames = [_where(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf_name, leaf_path = frames[-1]
        self_counts[f"{leaf_name} ({leaf_path})"] += count
        packages[_package(leaf_path)] += count
        seen = {f"{n} ({p})" for n, p in frames if p.startswith("conclave/")}
        for name in seen:
            inclusive[name] += count

    def share(counter: collections.Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100 * c / total, 1)) for name, c in counter.most_common(n)]

    return {
        "samples": total,
        "packages": share(packages, top),
        "self": share(self_counts, top),
        "conclave_inclusive": share(inclusive, 2 * top),
    }
