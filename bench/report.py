"""Output: the table on stdout, results.json and the latency plot (PNG).

The plot needs matplotlib (installed by ``make bench``, in the ``bench``
extras); without it the PNG is skipped with a note, so the smoke run
stays stdlib-only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RATIO_FIELDS = ("rate", "peak_rate", "p50_ms", "p99_ms", "cpu_s_per_1k_requests", "peak_memory_kib")


def ratio(conclave: float | None, kamailio: float | None) -> float | None:
    """Conclave / Kamailio, or None when either is missing or Kamailio's is 0."""
    if conclave is None or not kamailio:
        return None
    return round(conclave / kamailio, 3)


def ratios(servers: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Conclave / Kamailio for each headline figure.

    ``requests_per_cpu_second`` is the inverse ratio of CPU per request: the
    throughput ratio the two would have if each had a core to itself. On a
    2-core machine where sipp shares the cores, Kamailio's measured rate is
    capped by the load generator, so ``rate`` overstates Conclave's share.
    """
    c, k = servers.get("conclave"), servers.get("kamailio")
    if not c or not k:
        return {}
    out = {name: ratio(c.get(name), k.get(name)) for name in RATIO_FIELDS}
    out["requests_per_cpu_second"] = ratio(
        k.get("cpu_s_per_1k_requests") or None, c.get("cpu_s_per_1k_requests") or None
    )
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    """A plain-text table of every scenario (and the notes for those not run)."""
    rows = [("scenario", "server", "rate/s", "peak/s", "p50 ms", "p99 ms", "CPU s/1k req",
             "peak MiB", "note")]  # fmt: skip
    # The ratio row's note gives requests per CPU-second, Conclave / Kamailio.
    for sc in results.get("sipp", []):
        for name, run in sc["servers"].items():
            rows.append((sc["key"], name, _fmt(run["rate"]), _fmt(run.get("peak_rate")),
                         _fmt(run["p50_ms"]),
                         _fmt(run["p99_ms"]), _fmt(run["cpu_s_per_1k_requests"], 3),
                         _fmt(run["peak_memory_kib"] / 1024),
                         run.get("note", "")[:40]))  # fmt: skip
        r = sc.get("ratio") or {}
        if r:
            rows.append((sc["key"], "ratio C/K", _fmt(r.get("rate"), 3),
                         _fmt(r.get("peak_rate"), 3), _fmt(r.get("p50_ms"), 2),
                         _fmt(r.get("p99_ms"), 2), _fmt(r.get("cpu_s_per_1k_requests"), 2),
                         _fmt(r.get("peak_memory_kib"), 2),
                         "req per CPU-s: "
                         + _fmt(r.get("requests_per_cpu_second"), 3)))  # fmt: skip
    scale = results.get("scaleout")
    if scale:
        for name, run in scale["servers"].items():
            rows.append((scale["key"], name, _fmt(run["rate"]), _fmt(run.get("peak_rate")),
                         _fmt(run["p50_ms"]), _fmt(run["p99_ms"]),
                         _fmt(run["cpu_s_per_1k_requests"], 3),
                         _fmt(run["peak_memory_kib"] / 1024),
                         run.get("note", "")[:40]))  # fmt: skip
        growth = scale.get("scaling") or {}
        rows.append((scale["key"], "2 procs / 1", _fmt(growth.get("conclave"), 2), "-", "-",
                     "-", "-", "-", f"Kamailio: {_fmt(growth.get('kamailio'), 2)}"))  # fmt: skip
    for fan in results.get("presence", []):
        if "pending" in fan:
            rows.append(("presence", "conclave", "-", "-", "-", "-", "-", "-", fan["pending"]))
            continue
        note = f"N={fan['watchers']} {fan['transport']} last NOTIFY"
        if fan.get("error_count"):
            note += f"; {fan['error_count']} errors"
        rows.append((f"fanout-{fan['watchers']}-{fan['transport']}", "conclave", "-", "-",
                     _fmt(fan["p50_ms"]), _fmt(fan["p99_ms"]),
                     _fmt(fan.get("cpu_s_per_1k_requests"), 3),
                     _fmt(fan.get("peak_memory_kib", 0) / 1024), note))  # fmt: skip
    for cap in results.get("capacity", []):
        note = (
            f"{cap['users']} TLS users: idle {cap['idle_kib_per_connection']} KiB/conn, "
            f"{cap['kib_per_user']} KiB/user, {'PASS' if cap['passed'] else 'fail'}"
        )
        rows.append((f"capacity-{cap['users']}", "conclave", _fmt(cap["steady_rate"]), "-",
                     _fmt(cap["p50_ms"]), _fmt(cap["p99_ms"]),
                     _fmt(cap.get("cpu_s_per_1k_requests"), 3),
                     _fmt(cap["peak_memory_kib"] / 1024), note))  # fmt: skip
    for ov in results.get("overload", []):
        for phase in ov.get("phases", []):
            note = f"{phase['name']}: {phase['failed']} failed"
            if phase["name"] == "overload":
                note += f"; admitted {ov['admitted_share']:.0%} of sustained"
            rows.append((f"overload-{phase['name']}", ov["server"],
                         _fmt(phase["admitted_rate"]), "-", _fmt(phase["p50_ms"]),
                         _fmt(phase["p99_ms"]), "-",
                         _fmt(ov.get("rss_kib_after", 0) / 1024), note))  # fmt: skip
        if ov.get("note"):
            rows.append(("overload", ov["server"], "-", "-", "-", "-", "-", "-", ov["note"][:40]))
    fuzz = results.get("fuzz")
    if fuzz:
        ok = fuzz["alive"] and fuzz["answers_afterwards"]
        rss = f"RSS {fuzz['rss_kib_start'] // 1024}->{fuzz['rss_kib_end'] // 1024} MiB"
        note = f"{fuzz['messages']} mutated: {'still answers' if ok else 'FAILED'}; {rss}"
        rows.append(("fuzz", "conclave", "-", "-", "-", "-", "-",
                     _fmt(fuzz["rss_kib_end"] / 1024), note))  # fmt: skip
    for key, text in results.get("not_run", {}).items():
        rows.append((key, "-", "-", "-", "-", "-", "-", "-", text[:60]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return path


def plot(results: dict[str, Any], out: Path) -> Path | None:
    """p50 and p99 latency against offered rate, one panel per sipp scenario."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scenarios = [
        sc
        for sc in results.get("sipp", [])
        if any(s["successful"] for run in sc["servers"].values() for s in run["steps"])
    ]
    fans = [f for f in results.get("presence", []) if f.get("rounds")]
    panels = len(scenarios) + (1 if fans else 0)
    if panels == 0:
        return None
    cols = 2 if panels > 1 else 1
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    colours = {"conclave": "tab:blue", "kamailio": "tab:orange"}
    for ax, sc in zip(axes.flat, scenarios, strict=False):
        for name, run in sc["servers"].items():
            steps = [s for s in run["steps"] if s["successful"]]
            x = [s["offered_rate"] for s in steps]
            colour = colours.get(name, "tab:gray")
            ax.plot(x, [max(s["p50_ms"], 0.5) for s in steps], "o-", color=colour,
                    label=f"{name} p50")  # fmt: skip
            ax.plot(x, [max(s["p99_ms"], 0.5) for s in steps], "s--", color=colour,
                    label=f"{name} p99")  # fmt: skip
        ax.set_title(sc["title"], fontsize=10)
        ax.set_xlabel("offered rate (calls/s)")
        ax.set_ylabel("response time (ms, log)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if fans:
        ax = axes.flat[len(scenarios)]
        for transport, colour in (("tls", "tab:blue"), ("udp", "tab:green")):
            chosen = [f for f in fans if f["transport"] == transport]
            if chosen:
                x = [f["watchers"] for f in chosen]
                ax.plot(x, [f["p99_ms"] for f in chosen], "s--", color=colour,
                        label=f"p99 {transport}")  # fmt: skip
                ax.plot(x, [f["p50_ms"] for f in chosen], "o-", color=colour,
                        label=f"p50 {transport}")  # fmt: skip
        ax.axhline(200, color="red", linewidth=0.8, label="target p99 200 ms")
        ax.set_title("4. Presence fan-out: PUBLISH to last NOTIFY (Conclave)", fontsize=10)
        ax.set_xlabel("watchers")
        ax.set_ylabel("ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle(f"Conclave vs Kamailio on {results.get('machine', {}).get('cpus', '?')} cores "
                 "(same run; sipp's clock has ~4 ms steps)", fontsize=11)  # fmt: skip
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
