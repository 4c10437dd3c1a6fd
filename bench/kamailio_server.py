"""Kamailio under test: the user table, the rendered config, the process.

The config is ``bench/kamailio/kamailio.cfg`` with its ``@PLACEHOLDERS@``
filled in; the users' HA1 values (the same as Conclave's store) are a db_text
``htable`` table that Kamailio loads once into memory. TLS uses Conclave's server
certificate and key, so both servers do the same handshake work and a
client trusts both with the same CA.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import socket
import subprocess
from pathlib import Path

from .cpus import server_prefix
from .servers import (
    DOMAIN,
    EXTRA_USERS,
    HOST,
    START_TIMEOUT,
    ServerProcess,
    password,
    tcp_listening,
    udp_bound,
    user_name,
    wait_for,
)

CONFIG_TEMPLATE = Path(__file__).parent / "kamailio" / "kamailio.cfg"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
SHM_MB = 256
"""Shared memory: usrloc, transactions and TCP/TLS connections live here."""
PKG_MB = 16
"""Private memory per process."""


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both UDP and TCP on HOST (checked by binding both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind((HOST, 0))
            port = int(first.getsockname()[1])
            other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, other) as second:
                try:
                    second.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def _ha1(name: str) -> str:
    return hashlib.md5(f"{name}:{DOMAIN}:{password(name)}".encode()).hexdigest()


def write_user_table(db_dir: Path, users: int) -> None:
    """The bench users' HA1 values as a db_text ``htable`` table, which Kamailio
    loads once into its in-memory hash table (the fair configuration, issue 14)."""
    db_dir.mkdir(parents=True, exist_ok=True)
    names = [user_name(i) for i in range(users)] + list(EXTRA_USERS)
    # key_type 0: a plain key; value_type 0: a string value; expires 0: never.
    rows = [
        "id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int)"
    ]
    rows += [f"{i + 1}:{n}:0:0:{_ha1(n)}:0" for i, n in enumerate(names)]
    (db_dir / "htable").write_text("\n".join(rows) + "\n")
    (db_dir / "version").write_text(
        "id(int,auto) table_name(string) table_version(int) \n0:htable:2\n0:location:9\n"
    )


def render_config(
    run_dir: Path, cert: Path, key: Path, sip_port: int, tls_port: int, children: int = 1
) -> Path:
    """Write kamailio.cfg and tls.cfg for this run into ``run_dir`` (``children``: worker
    processes per listener; one, as Conclave's one process, except in scenario 6)."""
    tls_cfg = run_dir / "tls.cfg"
    tls_cfg.write_text(
        "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
        f"require_certificate = no\nprivate_key = {key}\ncertificate = {cert}\n"
    )
    text = CONFIG_TEMPLATE.read_text()
    values = {
        "@HOST@": HOST,
        "@DOMAIN@": DOMAIN,
        "@SIP_PORT@": str(sip_port),
        "@TLS_PORT@": str(tls_port),
        "@MODULES@": MODULES,
        "@DB_DIR@": str(run_dir / "db"),
        "@TLS_CFG@": str(tls_cfg),
        "@OPEN_FILES@": str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
    }
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    text = text.replace("\nchildren=1\n", f"\nchildren={children}\n")
    text = text.replace("\ntcp_children=1\n", f"\ntcp_children={children}\n")
    path = run_dir / "kamailio.cfg"
    path.write_text(text)
    return path


def _listening(sip_port: int, tls_port: int) -> bool:
    return tcp_listening(sip_port) and tcp_listening(tls_port) and udp_bound(sip_port)


def start_kamailio(
    run_dir: Path, users: int, cert: Path, key: Path, *, children: int = 1, name: str = "kamailio"
) -> ServerProcess:
    """Run Kamailio in the foreground in its own process group; wait until it listens.
    With ``children`` > 1 it is not pinned to one core (scenario 6)."""
    binary = kamailio_binary()
    if binary is None:
        raise RuntimeError("kamailio is not installed (scripts/install-bench.sh)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_user_table(run_dir / "db", users)
    sip_port, tls_port = free_port(), free_port()
    cfg = render_config(run_dir, cert, key, sip_port, tls_port, children)
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"kamailio config check failed:\n{check.stderr[-3000:]}")
    log_path = run_dir / "kamailio.log"
    server = ServerProcess(name, log_path=log_path)
    with log_path.open("wb") as log:
        server.proc = subprocess.Popen(
            [*server_prefix(pin=children == 1), binary, "-DD", "-E", "-f", str(cfg),
             "-P", str(run_dir / "kamailio.pid"), "-Y", str(run_dir),
             "-m", str(SHM_MB), "-M", str(PKG_MB)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: _listening(sip_port, tls_port), START_TIMEOUT, "kamailio to listen",
            server.alive,
        )  # fmt: skip
    except RuntimeError:
        server.stop()
        raise RuntimeError(
            "kamailio did not start:\n" + log_path.read_text(errors="replace")[-3000:]
        ) from None
    server.ports = {"udp": sip_port, "tcp": sip_port, "tls": tls_port}
    return server
