"""Smoke run of the benchmark suite (bench/, issue 8): it still runs and writes its JSON.

Seconds long, tiny rates, Conclave only (the comparison with Kamailio is
``make bench``'s). No assertion on any timing or rate: only that every
scenario ran, its calls succeeded and the results have the documented
shape. Under CI=true a missing sipp fails; elsewhere it skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 100.0
"""Seconds the whole smoke run may take (it usually needs about 30)."""


def _require_sipp() -> None:
    if shutil.which("sipp") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("sipp is missing (scripts/install-peers.sh installs sip-tester)")
        pytest.skip("sipp is not installed")  # outside CI only: under CI=true it failed above


@pytest.mark.timeout(LIMIT + 20)
def test_bench_quick_run_writes_results(tmp_path: Path) -> None:
    _require_sipp()
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--servers",
            "conclave,floor",
            "--scenarios",
            "1,2,3,4,5,6,7,8",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
    assert results["server_pinned"] is (len(os.sched_getaffinity(0)) >= 2)
    assert results["machine"]["cpus"] >= 1

    keys = {sc["key"]: sc for sc in results["sipp"]}
    assert {"register-udp", "register-tls", "message-udp", "call-udp"} <= set(keys)
    for key, sc in keys.items():
        run = sc["servers"]["conclave"]
        assert "kamailio" not in sc["servers"]
        if key == "register-tls" and shutil.which("stunnel4") is None:
            assert run["note"].startswith("not run")
            continue
        assert run["steps"], key
        for step in run["steps"]:
            assert step["successful"] == step["calls"], (key, step)
            assert step["cpu_seconds"] is not None
        assert run["peak_memory_kib"] > 0
    # The do-nothing responder of bench/floor.py answers sipp's REGISTERs too.
    floor = keys["register-udp"]["servers"]["floor"]
    assert floor["steps"] and all(s["successful"] == s["calls"] for s in floor["steps"])
    assert set(keys["message-udp"]["servers"]) == {"conclave"}

    fanouts = results["presence"]
    assert {f["transport"] for f in fanouts} == {"tls", "udp"}
    for fan in fanouts:
        assert fan["error_count"] == 0, fan
        assert fan["rounds"] == 2

    (capacity,) = results["capacity"]
    assert capacity["signed_in"] == capacity["users"] == capacity["subscribed"]
    assert capacity["error_count"] == 0, capacity
    scale = results["scaleout"]  # one process, then two workers sharing the port
    assert set(scale["servers"]) == {"conclave-1", "conclave-2"}
    for name, run in scale["servers"].items():
        assert run["steps"], name
        for step in run["steps"]:
            assert step["successful"] == step["calls"], (name, step)
    assert scale["scaling"]["conclave"] is not None
    (overload,) = results["overload"]
    assert [p["name"] for p in overload["phases"]] == ["hold", "overload", "recovery"]
    assert overload["alive_after"] and overload["sustained_rate"] > 0
    fuzz = results["fuzz"]
    assert fuzz["alive"] and fuzz["answers_afterwards"], fuzz
    assert "register-udp" in proc.stdout  # the table
