"""Scenario 7: holding the sustained rate, then three times it, then back (issue 14).

MESSAGE over UDP (scenario 2's sipp scenarios, with its registered UAS),
against each server in the same run, in three phases:

1. **hold**: the server's sustained rate (scenario 2's headline, or given)
   for :data:`HOLD_SECONDS`: every call must succeed, in particular no 503
   once the transaction table has been through many Timer J periods;
2. **overload**: :data:`FACTOR` times that rate for :data:`OVERLOAD_SECONDS`:
   the calls that succeed are the *admitted* ones; their rate (as a share of
   the sustained rate) and p99 are what the issue judges (>= 80%, < 200 ms);
3. **recovery**: the sustained rate again, :data:`RECOVERY_SECONDS` later
   than the overload ended at the most: clean and fast again.

The server's resident memory is read before the hold and after the recovery
(a leak would show as growth that the hold did not already show).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .kamailio_server import free_port
from .procstat import pss_kib, status_kib
from .servers import ServerProcess
from .sipp import SippUAS, StepResult, run_step
from .sipp_suite import SCENARIOS

HOLD_SECONDS = 120.0
"""Long enough to go through Timer J (32 s) several times: a fixed transaction
table that fills after tens of seconds shows up here, not in a 5 s step."""
OVERLOAD_SECONDS = 30.0
FACTOR = 3.0
RECOVERY_SECONDS = 5.0

MESSAGE = next(sc for sc in SCENARIOS if sc.key == "message-udp")


@dataclass
class Phase:
    name: str
    offered_rate: float
    calls: int
    successful: int
    failed: int
    admitted_rate: float
    p50_ms: float
    p99_ms: float
    error: str = ""

    @classmethod
    def of(cls, name: str, step: StepResult) -> Phase:
        return cls(
            name, step.offered_rate, step.calls, step.successful, step.failed,
            round(step.achieved_rate, 1), step.p50_ms, step.p99_ms, step.error[:200],
        )  # fmt: skip


@dataclass
class OverloadRun:
    server: str
    sustained_rate: float
    phases: list[Phase] = field(default_factory=list)
    admitted_share: float = 0.0
    """Admitted rate under overload / sustained rate."""
    rss_kib_before: int = 0
    rss_kib_after: int = 0
    alive_after: bool = True
    note: str = ""


def resident_kib(server: ServerProcess) -> int:
    pids = server.pids()
    if len(pids) == 1:
        return status_kib(pids[0], "VmRSS")
    return sum(pss_kib(p) for p in pids)


def run_overload(
    server: ServerProcess,
    workdir: Path,
    *,
    sustained: float,
    users_csv: Path,
    hold_seconds: float = HOLD_SECONDS,
    overload_seconds: float = OVERLOAD_SECONDS,
    factor: float = FACTOR,
    log: Callable[[str], None] = print,
) -> OverloadRun:
    run = OverloadRun(server.name, sustained)
    if sustained <= 0:
        run.note = "not run: no sustained MESSAGE rate for this server"
        return run
    sc = MESSAGE
    assert sc.uas is not None and sc.to_user is not None
    guard = hold_seconds + overload_seconds + 4 * RECOVERY_SECONDS + 300
    uas = SippUAS(sc.uas, sc.to_user, workdir / "uas", free_port(), guard)
    target = server.target("udp")
    keys = {"to_user": sc.to_user, "contact_port": str(free_port())}

    def step(name: str, rate: float, seconds: float) -> Phase:
        result = run_step(
            sc.scenario, target, workdir / name, rate=rate, calls=max(1, int(rate * seconds)),
            transport="udp", local_port=free_port(), csv=users_csv, keys=keys,
            auth_uri=sc.auth_uri,
        )  # fmt: skip
        phase = Phase.of(name, result)
        log(
            f"  {server.name:9s} overload {name:9s} offered {rate:7.0f}/s -> "
            f"{phase.admitted_rate:8.1f}/s ok {phase.successful}/{phase.calls} "
            f"p50 {phase.p50_ms:g} p99 {phase.p99_ms:g} ms {phase.error[:60]}"
        )
        return phase

    try:
        registered = uas.register(target)
        if not registered.clean:
            raise RuntimeError(f"the {sc.to_user} UAS did not register: {registered}")
        uas.start()
        run.rss_kib_before = resident_kib(server)
        run.phases.append(step("hold", sustained, hold_seconds))
        overload = step("overload", factor * sustained, overload_seconds)
        run.phases.append(overload)
        run.admitted_share = round(overload.admitted_rate / sustained, 3)
        run.phases.append(step("recovery", sustained, RECOVERY_SECONDS))
        run.alive_after = server.alive()
        run.rss_kib_after = resident_kib(server)
    except RuntimeError as exc:
        run.note = f"error: {exc}"
        log(f"  {server.name} overload: {exc}")
    finally:
        uas.stop()
    return run


def as_dict(run: OverloadRun) -> dict[str, Any]:
    return asdict(run)
