"""The ``conclave`` command as a real process, for the command tests."""

from __future__ import annotations

import subprocess
import sys

CONCLAVE = [sys.executable, "-m", "conclave"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``conclave ARGS``, with ``stdin`` as its input; bounded in time."""
    return subprocess.run(
        [*CONCLAVE, *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def ok(*args: str, stdin: str | None = None) -> str:
    """``conclave ARGS`` must succeed; its standard output."""
    proc = run(*args, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
