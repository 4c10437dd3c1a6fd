"""Driving sipp: one load step (a UAC at a fixed rate) and a background UAS.

A step runs sipp with ``-m CALLS -r RATE`` and ``-trace_rtt -rtt_freq 1``,
so every response time the scenario marks (``start_rtd`` / ``rtd``) is
written to ``*_rtt.csv`` as ``Date_ms;response_time_ms;rtd_no``. The
achieved rate is the successful calls over the span from the first call to
the last response time recorded. Times are whole milliseconds (sipp's
clock): a p50 of 0 means under a millisecond.
"""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .servers import DOMAIN, HOST, password, udp_bound, user_name, wait_for

SCENARIOS = Path(__file__).parent / "scenarios"
RECV_TIMEOUT_MS = 10_000
"""A call waiting longer than this for a message fails (and counts as an error)."""


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def write_users_csv(path: Path, first: int, count: int) -> Path:
    """An injection file: user name; the [authentication] keyword with its password."""
    lines = ["SEQUENTIAL"]
    for i in range(first, first + count):
        name = user_name(i)
        lines.append(f"{name};[authentication username={name} password={password(name)}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_one_user_csv(path: Path, name: str) -> Path:
    path.write_text(
        f"SEQUENTIAL\n{name};[authentication username={name} password={password(name)}]\n"
    )
    return path


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return float(ordered[rank])


@dataclass
class StepResult:
    """What one sipp load step measured."""

    offered_rate: float
    calls: int
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    returncode: int | None = None
    error: str = ""

    @property
    def achieved_rate(self) -> float:
        return self.successful / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def clean(self) -> bool:
        """Every call succeeded."""
        return self.failed == 0 and self.successful == self.calls and not self.error


MULTI_SOCKETS = 5_000
"""Sockets sipp may hold at once with a socket per call (well below the fd limit)."""


def _keys(transport: str) -> dict[str, str]:
    via, contact = {"udp": ("UDP", "udp"), "udp-multi": ("UDP", "udp"), "tcp": ("TCP", "tcp"),
                    "tls": ("TLS", "tls")}[transport]  # fmt: skip
    return {"domain": DOMAIN, "via_transport": via, "contact_transport": contact,
            "expires": "3600", "text": "benchmark message"}  # fmt: skip


def _argv(
    scenario: str, target: str, workdir: Path, *, transport: str, local_port: int,
    keys: Mapping[str, str], extra: list[str],
) -> list[str]:  # fmt: skip
    binary = sipp_binary()
    if binary is None:
        raise RuntimeError("sipp is not installed (scripts/install-bench.sh)")
    argv = [binary, "-sf", str(SCENARIOS / f"{scenario}.xml"), "-i", HOST, "-p", str(local_port)]
    # sipp speaks TLS through stunnel: plain TCP on its side (see bench/tls.py).
    # udp-multi: a socket (a source port) per call, as many clients would use: the kernel
    # spreads them over processes sharing the server's port (scenario 6, SO_REUSEPORT).
    mode = {"udp": "u1", "udp-multi": "un"}.get(transport, "t1")
    argv += ["-t", mode, "-nostdin"]
    if mode == "un":  # sipp refuses to start if its socket ceiling passes the fd limit
        argv += ["-max_socket", str(MULTI_SOCKETS)]
    argv += ["-trace_err", "-error_file", str(workdir / "errors.log")]
    all_keys = _keys(transport)
    all_keys.update(keys)
    for key, value in all_keys.items():
        argv += ["-key", key, value]
    return [*argv, *extra, target]


def _read_stats(workdir: Path) -> tuple[list[float], float, int, int, int]:
    """Latencies, span (s), successful, failed and retransmissions from sipp's files."""
    latencies: list[float] = []
    span_ms = 0.0
    for rtt in workdir.glob("*_rtt.csv"):
        for line in rtt.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3:
                span_ms = max(span_ms, float(parts[0]))
                latencies.append(float(parts[1]))
    successful = failed = retrans = 0
    for stat in workdir.glob("*_.csv"):
        rows = stat.read_text().splitlines()
        if len(rows) >= 2:
            head, last = rows[0].split(";"), rows[-1].split(";")
            row = dict(zip(head, last, strict=False))
            successful = int(row.get("SuccessfulCall(C)", 0) or 0)
            failed = int(row.get("FailedCall(C)", 0) or 0)
            retrans = int(row.get("Retransmissions(C)", 0) or 0)
    return latencies, span_ms / 1000, successful, failed, retrans


def run_step(
    scenario: str,
    target: str,
    workdir: Path,
    *,
    rate: float,
    calls: int,
    transport: str = "udp",
    local_port: int,
    csv: Path | None = None,
    keys: Mapping[str, str] | None = None,
    auth_uri: str | None = None,
    limit: int | None = None,
) -> StepResult:
    """One load step: ``calls`` calls offered at ``rate`` per second; bounded in time."""
    workdir.mkdir(parents=True, exist_ok=True)
    budget = calls / rate + RECV_TIMEOUT_MS / 1000 + 10
    extra = ["-m", str(calls), "-r", f"{rate:g}", "-rp", "1000"]
    extra += ["-timeout", f"{budget:.0f}s", "-timeout_error", "-recv_timeout", str(RECV_TIMEOUT_MS)]
    extra += ["-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1"]
    extra += ["-l", str(limit or max(100, int(rate * 3)))]
    if csv is not None:
        extra += ["-inf", str(csv)]
    if auth_uri is not None:
        extra += ["-auth_uri", auth_uri]
    argv = _argv(scenario, target, workdir, transport=transport, local_port=local_port,
                 keys=keys or {}, extra=extra)  # fmt: skip
    result = StepResult(offered_rate=rate, calls=calls)
    with (workdir / "stdout.txt").open("wb") as out:
        proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            result.returncode = proc.wait(timeout=budget + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            result.error = "sipp overran its time budget"
    stats = _read_stats(workdir)
    result.latencies_ms, result.elapsed, result.successful, result.failed = stats[:4]
    result.retransmissions = stats[4]
    if result.returncode not in (0, 1) and not result.error:
        tail = (workdir / "stdout.txt").read_text(errors="replace")[-600:]
        result.error = f"sipp exit {result.returncode}: {tail.strip()}"
    if result.failed and not result.error:
        result.error = _first_errors(workdir)
    return result


def _first_errors(workdir: Path, lines: int = 3) -> str:
    """The first lines of sipp's error log (why calls failed), kept in the results."""
    try:
        text = (workdir / "errors.log").read_text(errors="replace")
    except OSError:
        return ""
    found = [ln.strip() for ln in text.splitlines() if ln.strip()][:lines]
    return " | ".join(found)[:500]


class SippUAS:
    """A sipp UAS on a UDP port, registered first from that very port.

    Conclave routes to the flow a REGISTER came from, so the UAS registers
    (register.xml with a one-line CSV) from the port it then listens on.
    It runs until :meth:`stop` (or its own ``-timeout`` guard).
    """

    def __init__(self, scenario: str, user: str, workdir: Path, port: int, guard: float) -> None:
        self.scenario, self.user, self.workdir, self.port = scenario, user, workdir, port
        self.guard = guard
        self.proc: subprocess.Popen[bytes] | None = None
        self.registrar: str | None = None

    def register(self, registrar: str, expires: int = 3600) -> StepResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        csv = write_one_user_csv(self.workdir / "uas-user.csv", self.user)
        self.registrar = registrar if expires else None
        return run_step("register", registrar, self.workdir / f"register-{expires}", rate=10,
                        calls=1, local_port=self.port, csv=csv, auth_uri=DOMAIN,
                        keys={"contact_port": str(self.port), "expires": str(expires)})  # fmt: skip

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        extra = ["-s", self.user, "-timeout", f"{self.guard:.0f}s", "-m", "100000000"]
        argv = _argv(self.scenario, "", self.workdir, transport="udp", local_port=self.port,
                     keys={}, extra=extra)[:-1]  # fmt: skip
        out = (self.workdir / "uas-stdout.txt").open("wb")
        self.proc = subprocess.Popen(argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        out.close()
        proc = self.proc
        wait_for(lambda: udp_bound(self.port), 10, "sipp UAS to bind",
                 lambda: proc.poll() is None)  # fmt: skip

    def stop(self) -> None:
        """Stop the UAS, then remove its binding (from the same port): a later
        scenario's UAS for the same user must be the only contact. Both servers
        fork to every binding (Kamailio's ``lookup`` appends the others as
        branches by default), so a binding left behind by the benchmark itself
        would make each server send every request to this dead port too and
        retransmit it for 32 s: work no real deployment's benchmark measures."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.registrar is not None:
            self.register(self.registrar, expires=0)

    def __enter__(self) -> SippUAS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def settle(
    cpu: Callable[[], float], *, idle: float = 0.05, window: float = 0.5, timeout: float = 30
) -> None:
    """Wait until the server is idle (less than ``idle`` CPU seconds per ``window``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu()
        time.sleep(window)
        if cpu() - before < idle:
            return
