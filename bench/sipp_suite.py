"""Scenarios 1-3: the same sipp scenarios against each server, rate by rate.

Each scenario climbs a ladder of offered rates. A step offers
``rate x step_seconds`` calls; the climb stops at the first step with a
failed call, an achieved rate below :data:`KEEP_UP` of the offered one, or
a p99 above :data:`MAX_P99_MS`. A scenario's headline *rate* is the highest
achieved rate of a *sustained* step: every call succeeded, the server kept
up (achieved >= KEEP_UP x offered) and p99 <= :data:`SUSTAINED_P99_MS`; its
latency and CPU per 1000 requests are from that step. ``peak_rate`` is the
highest achieved rate of any step where every call succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kamailio_server import free_port
from .servers import DOMAIN, ServerProcess
from .sipp import SippUAS, StepResult, run_step, settle
from .tls import Stunnel, stunnel_binary

KEEP_UP = 0.9
"""A step whose achieved rate is below this share of the offered one is overload."""
MAX_P99_MS = 1000.0
"""Past a second the server is queueing; higher steps would only time out."""
SUSTAINED_P99_MS = 200.0
"""The response time a step must keep (p99) to count as sustained."""


@dataclass(frozen=True)
class SippScenario:
    """One benchmark scenario driven by sipp."""

    key: str
    title: str
    scenario: str
    transport: str
    requests_per_call: int
    """Requests the client sends per call (the unit of "CPU per 1000 requests")."""
    auth_uri: str
    to_user: str | None = None
    uas: str | None = None
    """Scenario of the sipp UAS that answers (registered as ``to_user`` first)."""


SCENARIOS: tuple[SippScenario, ...] = (
    SippScenario("register-udp", "1. REGISTER with digest, UDP", "register", "udp", 2, DOMAIN),
    SippScenario("register-tls", "1. REGISTER with digest, TLS", "register", "tls", 2, DOMAIN),
    SippScenario("message-udp", "2. MESSAGE relayed to a registered user, UDP", "message",
                 "udp", 2, f"rcpt@{DOMAIN}", "rcpt", "uas_message"),
    SippScenario("call-udp", "3. Call INVITE/180/200/ACK/BYE via the proxy, UDP", "call",
                 "udp", 5, f"callee@{DOMAIN}", "callee", "uas_answer"),
)  # fmt: skip


@dataclass
class Run:
    """One scenario against one server: every step, and the headline figures."""

    server: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    rate: float = 0.0
    peak_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s_per_1k_requests: float = 0.0
    cpu_utilisation: float = 0.0
    peak_memory_kib: int = 0
    note: str = ""


def _step_dict(step: StepResult, cpu: float, requests: int) -> dict[str, Any]:
    done = step.successful * requests
    return {
        "offered_rate": step.offered_rate,
        "achieved_rate": round(step.achieved_rate, 1),
        "calls": step.calls,
        "successful": step.successful,
        "failed": step.failed,
        "retransmissions": step.retransmissions,
        "p50_ms": step.p50_ms,
        "p99_ms": step.p99_ms,
        "cpu_seconds": round(cpu, 3),
        "cpu_s_per_1k_requests": round(cpu / done * 1000, 4) if done else None,
        "cpu_utilisation": round(cpu / step.elapsed, 3) if step.elapsed else None,
        "error": step.error,
    }


def run_ladder(
    scenario: SippScenario,
    server: ServerProcess,
    workdir: Path,
    *,
    rates: list[float],
    step_seconds: float,
    users_csv: Path,
    ca_file: Path,
    log: Callable[[str], None] = print,
) -> Run:
    """Climb the rate ladder for one scenario against one server."""
    run = Run(server.name)
    meter = server.meter()
    uas: SippUAS | None = None
    tunnel: Stunnel | None = None
    target = server.target("udp" if scenario.transport.startswith("udp") else scenario.transport)
    if scenario.transport == "tls" and stunnel_binary() is None:
        run.note = "not run: stunnel4 is missing (scripts/install-bench.sh installs it)"
        log(f"  {server.name} {scenario.key}: {run.note}")
        return run
    guard = sum(max(1, int(r * step_seconds)) / r for r in rates) + 60 * len(rates) + 60
    try:
        if scenario.uas is not None and scenario.to_user is not None:
            uas = SippUAS(scenario.uas, scenario.to_user, workdir / "uas", free_port(), guard)
            registered = uas.register(server.target("udp"))
            if not registered.clean:
                raise RuntimeError(f"the {scenario.to_user} UAS did not register: {registered}")
            uas.start()
        if scenario.transport == "tls":
            tunnel = Stunnel(target, ca_file, workdir / "stunnel").start()
            target = tunnel.address
        keys = {"to_user": scenario.to_user} if scenario.to_user else {}
        keys["contact_port"] = str(free_port())  # one binding per user across the steps
        for index, rate in enumerate(rates):
            calls = max(1, int(rate * step_seconds))
            meter.start()
            step = run_step(
                scenario.scenario, target, workdir / f"step{index}-{rate:g}", rate=rate,
                calls=calls, transport=scenario.transport, local_port=free_port(),
                csv=users_csv, keys=keys, auth_uri=scenario.auth_uri,
            )  # fmt: skip
            usage = meter.stop()
            info = _step_dict(step, usage.cpu_seconds, scenario.requests_per_call)
            run.steps.append(info)
            run.peak_memory_kib = max(run.peak_memory_kib, usage.peak_kib)
            log(
                f"  {server.name:9s} {scenario.key:13s} offered {rate:7g}/s -> "
                f"{step.achieved_rate:8.1f}/s ok {step.successful}/{calls} p50 {step.p50_ms:g} "
                f"p99 {step.p99_ms:g} ms cpu {info['cpu_utilisation']} {step.error[:80]}"
            )
            if step.clean:
                run.peak_rate = max(run.peak_rate, round(step.achieved_rate, 1))
            sustained = (step.clean and step.achieved_rate >= KEEP_UP * rate
                         and step.p99_ms <= SUSTAINED_P99_MS)  # fmt: skip
            if sustained and step.achieved_rate >= run.rate:
                run.rate = round(step.achieved_rate, 1)
                run.p50_ms, run.p99_ms = step.p50_ms, step.p99_ms
                run.cpu_s_per_1k_requests = info["cpu_s_per_1k_requests"] or 0.0
                run.cpu_utilisation = info["cpu_utilisation"] or 0.0
            settle(meter.total_cpu)
            if (not step.clean or step.achieved_rate < KEEP_UP * rate
                    or step.p99_ms > MAX_P99_MS):  # fmt: skip
                break
        else:
            run.note = "did not saturate: the top step of the ladder was clean"
    except RuntimeError as exc:
        run.note = f"error: {exc}"
        log(f"  {server.name} {scenario.key}: {exc}")
    finally:
        if tunnel is not None:
            tunnel.stop()
        if uas is not None:
            uas.stop()
    return run
