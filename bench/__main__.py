"""``python -m bench``: run the suite and write table, JSON and plot.

Scenarios: 1 REGISTER (UDP, TLS), 2 MESSAGE, 3 call -- both
servers, same sipp scenarios, same run; 4 presence fan-out and 5 capacity
-- Conclave only; 6 one host, one process or two (``serve --workers 2``, Kamailio
children=2) -- both servers; 7 hold, overload at
3x and recovery (MESSAGE, UDP) -- both servers; 8 a million mutated messages -- Conclave
(not in the default run: ``--scenarios 8``); 9 availability of Enterprise pools (a member
killed, a whole pool failed over to its partner, backup lag) -- Conclave, on the
machine's PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import report
from .capacity import add_contacts, raise_fd_limit, run_capacity
from .cpus import SERVER_CORE, pin_load_generators
from .floor import start_floor
from .fuzz import MESSAGES as FUZZ_MESSAGES
from .fuzz import run_fuzz
from .kamailio_server import free_port, kamailio_binary, start_kamailio
from .overload import HOLD_SECONDS, OVERLOAD_SECONDS, run_overload
from .overload import as_dict as overload_dict
from .presence import fanout
from .profile import Profiler, summarise
from .servers import ServerProcess, deploy_conclave, start_conclave, udp_drops
from .sipp import sipp_binary, write_users_csv
from .sipp_suite import SCENARIOS, run_ladder
from .sipua import event_loop_policy

RESULTS = Path(__file__).parent / "results"
LADDER = "50,100,200,400,600,800,1000,1200,1600,2000,2400,3200,4800,6400"
"""Offered rates: doubling to 400, then finer steps where the two servers top out."""


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny rates and user counts, seconds long (CI)")  # fmt: skip
    p.add_argument("--servers", default="conclave,kamailio,floor",
                   help="Conclave always runs (Kamailio uses its certificate); "
                        "leave kamailio out to skip the comparison; floor is the do-nothing "
                        "Python responder of bench/floor.py (scenario 1, UDP)")  # fmt: skip
    p.add_argument("--scenarios", default="1,2,3,4,5,6,7,9", help="which of 1-9 to run")
    p.add_argument("--availability-rounds", type=int, default=3, help="repetitions (9)")
    p.add_argument("--users", type=int, default=10_000, help="distinct users (scenario 1)")
    p.add_argument("--rates", default=LADDER, help="offered call rates per step (1-3)")
    p.add_argument("--step-seconds", type=float, default=5.0)
    p.add_argument("--fanout", default="10,100,1000", help="watcher counts (scenario 4)")
    p.add_argument("--fanout-transports", default="tls,udp")
    p.add_argument("--rounds", type=int, default=20, help="PUBLISHes per fan-out size")
    p.add_argument(
        "--capacity",
        default="1000,5000,10000,19500",
        help="user counts (5); RLIMIT_NOFILE caps one process at its hard limit",
    )
    p.add_argument("--compression", type=float, default=1.0,
                   help="multiply the user model's rates (5); 1 = real time")  # fmt: skip
    p.add_argument("--steady-seconds", type=float, default=60.0)
    p.add_argument("--profile", action="store_true", help="py-spy Conclave in each scenario")
    p.add_argument("--overload-rates", default="",
                   help="sustained MESSAGE rates for 7, e.g. conclave=1200,kamailio=2400 "
                        "(default: scenario 2's, when it runs too)")  # fmt: skip
    p.add_argument("--hold-seconds", type=float, default=HOLD_SECONDS)
    p.add_argument("--fuzz-messages", type=int, default=FUZZ_MESSAGES)
    p.add_argument("--overload-seconds", type=float, default=OVERLOAD_SECONDS)
    p.add_argument("--no-pin", action="store_true",
                   help="let the servers and the load generators share every core "
                        "(default: each server alone on one core, see bench/cpus.py)")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.rates, args.step_seconds = 50, "5,10", 1.0
        args.fanout, args.rounds, args.capacity = "3", 2, "5"
        args.steady_seconds, args.compression = 2.0, 3600.0
        args.hold_seconds, args.overload_seconds = 2.0, 2.0
        args.fuzz_messages = 2_000
    return args


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    versions = {}
    for tool, argv in (("kamailio", ["-v"]), ("sipp", ["-v"]), ("stunnel4", ["-version"])):
        path = shutil.which(tool)
        if path:
            out = subprocess.run([path, *argv], capture_output=True, text=True, timeout=10)
            text = (out.stdout + out.stderr).strip().splitlines()
            named = [ln.strip() for ln in text if ln.strip().lower().startswith(tool[:5])]
            versions[tool] = (named or [ln.strip() for ln in text if ln.strip()] or [""])[0][:80]
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_mib": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "tools": versions}  # fmt: skip


def log(text: str) -> None:
    print(text, flush=True)


def _profile_summary(path: Path) -> dict[str, Any]:
    summary = summarise(path)
    return summary if summary["samples"] else {}


def run_sipp_scenarios(
    args: argparse.Namespace, conclave: ServerProcess, kamailio: ServerProcess | None,
    work: Path, ca: Path, wanted: set[str],
) -> list[dict[str, Any]]:  # fmt: skip
    csv = write_users_csv(work / "users.csv", 0, args.users)
    rates = [float(r) for r in args.rates.split(",")]
    out: list[dict[str, Any]] = []
    for sc in SCENARIOS:
        if sc.title[0] not in wanted:
            continue
        log(f"scenario {sc.title}")
        entry: dict[str, Any] = {"key": sc.key, "title": sc.title, "servers": {}}
        for server in [conclave, kamailio]:
            if server is None:
                continue
            profiler = None
            if args.profile and server.name == "conclave":
                profiler = Profiler(server.pid, args.out / "profiles" / f"{sc.key}.raw").start()
            try:
                run = run_ladder(sc, server, work / sc.key / server.name, rates=rates,
                                 step_seconds=args.step_seconds, users_csv=csv, ca_file=ca,
                                 log=log)  # fmt: skip
            finally:
                if profiler is not None:
                    profiler.stop()
            entry["servers"][server.name] = vars(run)
            if profiler is not None:
                entry["profile"] = _profile_summary(profiler.output)
        if sc.key == "register-udp" and "floor" in args.servers.split(","):
            with start_floor(free_port(socket.SOCK_DGRAM), work / "floor.log") as floor:
                run = run_ladder(sc, floor, work / sc.key / "floor", rates=rates,
                                 step_seconds=args.step_seconds, users_csv=csv, ca_file=ca,
                                 log=log)  # fmt: skip
            entry["servers"]["floor"] = vars(run)
        entry["ratio"] = report.ratios(entry["servers"])
        out.append(entry)
    return out


def run_overload_scenario(
    args: argparse.Namespace,
    servers: list[ServerProcess | None],
    sipp_results: list[dict[str, Any]],
    work: Path,
) -> list[dict[str, Any]]:
    """Scenario 7 for each server, at its sustained MESSAGE rate (scenario 2's
    headline in this run, or --overload-rates)."""
    given = dict(item.split("=", 1) for item in args.overload_rates.split(",") if "=" in item)
    measured = {
        name: run["rate"]
        for sc in sipp_results
        if sc["key"] == "message-udp"
        for name, run in sc["servers"].items()
    }
    csv = write_users_csv(work / "users-overload.csv", 0, args.users)
    out = []
    for server in servers:
        if server is None:
            continue
        sustained = float(given.get(server.name, measured.get(server.name, 0.0)))
        run = run_overload(
            server, work / "overload" / server.name, sustained=sustained, users_csv=csv,
            hold_seconds=args.hold_seconds, overload_seconds=args.overload_seconds, log=log,
        )  # fmt: skip
        out.append(overload_dict(run))
    return out


def run_presence(
    args: argparse.Namespace, conclave: ServerProcess, ca: Path
) -> list[dict[str, Any]]:
    sizes = _ints(args.fanout)
    out: list[dict[str, Any]] = []
    event_loop_policy()
    for transport in args.fanout_transports.split(","):
        for i, n in enumerate(sizes):
            if n > args.users:
                log(f"  fan-out {n} skipped: only {args.users} users")
                continue
            presentity = f"pres{i + (5 if transport == 'udp' else 0)}"
            meter = conclave.meter()
            drops = udp_drops(conclave.ports["udp"])
            profiler = None
            if args.profile and n == max(sizes):
                path = args.out / "profiles" / f"fanout-{n}-{transport}.raw"
                profiler = Profiler(conclave.pid, path).start()
            meter.start()
            port = conclave.ports["udp" if transport == "udp" else "tls"]
            ca_file = None if transport == "udp" else str(ca)
            result = asyncio.run(fanout(port, presentity, n, args.rounds, ca_file=ca_file))
            usage = meter.stop()
            if profiler is not None:
                profiler.stop()
            summary = result.summary()
            requests = result.notifies + 2 * (n + result.rounds)
            summary.update(
                transport=transport,
                cpu_s_per_1k_requests=round(usage.cpu_seconds / requests * 1000, 4),
                peak_memory_kib=usage.peak_kib,
                server_udp_drops=udp_drops(conclave.ports["udp"]) - drops,
            )
            if profiler is not None:
                summary["profile"] = _profile_summary(profiler.output)
            log(f"  fan-out N={n:5d} {transport}: to last NOTIFY p50 {summary['p50_ms']} ms "
                f"p99 {summary['p99_ms']} ms, {summary['error_count']} errors, "
                f"server UDP drops {summary['server_udp_drops']}")  # fmt: skip
            out.append(summary)
    return out


def run_capacity_ladder(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    event_loop_policy()
    for n in _ints(args.capacity):
        data = work / f"capacity-{n}"
        log(f"  capacity: deploying {n} users with 40 contacts each")
        deploy_conclave(data, n)
        asyncio.run(add_contacts(data, n))
        # The baseline for memory per connection is taken once the contact lists are in.
        with start_conclave(data, work / f"capacity-{n}.log", also="presence loaded") as server:
            profiler = None
            if args.profile:
                path = args.out / "profiles" / f"capacity-{n}.raw"
                profiler = Profiler(server.pid, path).start()
            try:
                run = asyncio.run(run_capacity(server, n, str(data / "ca" / "ca.crt"),
                                               compression=args.compression,
                                               steady_seconds=args.steady_seconds))  # fmt: skip
            finally:
                if profiler is not None:
                    profiler.stop()
        summary = run.summary()
        requests = run.steady_requests + 2 * (run.signed_in + run.subscribed) + run.notifies
        summary["cpu_s_per_1k_requests"] = round(run.cpu_seconds / max(requests, 1) * 1000, 4)
        summary["compression"] = args.compression
        if profiler is not None:
            summary["profile"] = _profile_summary(profiler.output)
        log(f"  capacity {n}: {summary}")
        out.append(summary)
        if run.signed_in < n:
            break  # connections refused: larger counts cannot sign in either
        shutil.rmtree(data, ignore_errors=True)
    return out


def run_main_server(
    args: argparse.Namespace, results: dict[str, Any], work: Path, wanted: set[str],
    servers: set[str],
) -> None:  # fmt: skip
    """Scenarios 1-4 against one Conclave deployment (and Kamailio for 1-3)."""
    log(f"deploying Conclave with {args.users} users in {work}")
    data = work / "conclave"
    deploy_conclave(data, args.users)
    ca = data / "ca" / "ca.crt"
    with start_conclave(data, work / "conclave.log") as conclave:
        kamailio: ServerProcess | None = None
        try:
            if "kamailio" in servers and wanted & {"1", "2", "3", "7"}:
                kamailio = start_kamailio(work / "kamailio", args.users,
                                          data / "tls" / "server.crt",
                                          data / "tls" / "server.key")  # fmt: skip
            if wanted & {"1", "2", "3"}:
                results["sipp"] = run_sipp_scenarios(args, conclave, kamailio, work, ca, wanted)
            if "7" in wanted:
                log("scenario 7. Hold, overload at 3x, recovery: MESSAGE over UDP")
                results["overload"] = run_overload_scenario(
                    args, [conclave, kamailio], results["sipp"], work
                )
        finally:
            if kamailio is not None:
                kamailio.stop()
        if "8" in wanted:
            log(f"scenario 8. {args.fuzz_messages} mutated messages over UDP (Conclave only)")
            results["fuzz"] = run_fuzz(conclave, messages=args.fuzz_messages, log=log)
        if "4" in wanted:
            log("scenario 4. Presence fan-out (Conclave only)")
            results["presence"] = run_presence(args, conclave, ca)
            results["not_run"]["4-kamailio"] = (
                "Kamailio's presence modules need a database schema (presentity, "
                "active_watchers...): not set up; Conclave only, as the issue allows"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = set(args.scenarios.split(","))
    servers = set(args.servers.split(","))
    if sipp_binary() is None and wanted & {"1", "2", "3", "7"}:
        log("sipp is missing: run scripts/install-bench.sh (make bench does)")
        return 2
    if "kamailio" in servers and kamailio_binary() is None:
        log("kamailio is missing: run scripts/install-bench.sh, or pass --servers conclave")
        return 2
    raise_fd_limit()
    pinned = False if args.no_pin else pin_load_generators()
    log(f"server on core {SERVER_CORE}, load generators on the others" if pinned
        else "not pinned: servers and load generators share the cores")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(), "quick": args.quick, "server_pinned": pinned,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "sipp": [], "presence": [], "capacity": [], "overload": [], "not_run": {},
    }  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="conclave-bench-"))
    try:
        if wanted & {"1", "2", "3", "4", "7", "8"}:
            run_main_server(args, results, work, wanted, servers)
        if "5" in wanted:
            log("scenario 5. Capacity under Lync's user model (Conclave only)")
            results["capacity"] = run_capacity_ladder(args, work)
        if "6" in wanted:
            log("scenario 6. One host, one process or two: MESSAGE over UDP")
            from .scaleout import run_scaleout

            results["scaleout"] = run_scaleout(args, work, log)
            log(f"  scaling (2 processes / 1): {results['scaleout']['scaling']}")
        if "9" in wanted:
            log("scenario 9. Availability of Enterprise pools (Conclave only)")
            from .availability import run_availability

            results["availability"] = run_availability(args.availability_rounds)
            log(f"  {results['availability']}")
    finally:
        # Keep the servers' logs (slow garbage collections, warnings) beside the results.
        args.out.mkdir(parents=True, exist_ok=True)
        for server_log in [*work.glob("*.log"), *work.glob("kamailio/kamailio.log")]:
            shutil.copy(server_log, args.out / server_log.name)
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    path = report.write_json(results, args.out)
    try:
        png = report.plot(results, args.out)
    except Exception as exc:  # a plotting problem must not lose the measured results
        log(f"plot failed: {exc!r}")
        png = None
    log("")
    log(report.table(results))
    log(f"\nJSON: {path}")
    if png:
        log(f"plot: {png}")
    elif results["sipp"] or results["presence"]:
        log("plot: skipped (matplotlib is not installed: make bench installs it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
