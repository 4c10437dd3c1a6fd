"""sipp scenarios and a background sipp UAS for end-to-end tests (see peers.py)."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .peers_base import (
    _SIPP_BIND_FAILED,
    DOMAIN,
    HOST,
    SCENARIOS,
    SIPP_BUILTINS,
    TlsRelay,
    _alive,
    _is_bound,
    _tail,
    free_port,
    require_tool,
    wait_until,
)

# --------------------------------------------------------------------------
# sipp


_TRANSPORTS = {
    # name: (sipp -t value, Via transport, Contact transport param)
    "u1": ("u1", "UDP", "udp"),
    "udp": ("u1", "UDP", "udp"),
    "t1": ("t1", "TCP", "tcp"),
    "tcp": ("t1", "TCP", "tcp"),
    "l1": ("t1", "TLS", "tls"),
    "tls": ("t1", "TLS", "tls"),
}


def _transport(name: str) -> tuple[str, str, str]:
    try:
        return _TRANSPORTS[name]
    except KeyError:
        raise ValueError(f"unknown sipp transport {name!r} (use u1, t1 or l1)") from None


def _is_tls(name: str) -> bool:
    return _transport(name)[1] == "TLS"


def scenario_path(scenario: str | os.PathLike[str]) -> str | Path:
    """A scenario file, a name under tests/e2e/scenarios, or a sipp built-in."""
    if isinstance(scenario, os.PathLike):
        path = Path(scenario)
        if not path.is_file():
            raise FileNotFoundError(path)
        return path
    local = SCENARIOS / (scenario if scenario.endswith(".xml") else f"{scenario}.xml")
    if local.is_file():
        return local
    if scenario in SIPP_BUILTINS:
        return scenario
    path = Path(scenario)
    if path.is_file():
        return path
    raise FileNotFoundError(f"no sipp scenario {scenario!r} in {SCENARIOS} nor built in")


def default_keys(transport: str, local_port: int) -> dict[str, str]:
    """Values for every -key our scenarios use (sipp aborts on an unset key)."""
    _, via, contact = _transport(transport)
    return {
        "domain": DOMAIN,
        "expires": "300",
        "to_user": "bob",
        "text": "hello from sipp",
        "via_transport": via,
        "contact_transport": contact,
        "contact_host": HOST,
        "contact_port": str(local_port),
    }


_TRACE_BLOCK = re.compile(
    r"^(UDP|TCP|TLS|SCTP) message (received|sent) [\[(]\d+[\])] bytes ?:\n\n(.*?)$", re.M
)


@dataclass
class SippResult:
    """Outcome of one sipp run; ``check()`` raises with the full story."""

    command: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    messages: str = ""  # -trace_msg log: every message sent and received
    errors: str = ""  # -trace_err log: unexpected messages, timeouts
    timed_out: bool = False
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def _first_lines(self, direction: str) -> list[str]:
        return [m.group(3) for m in _TRACE_BLOCK.finditer(self.messages) if m.group(2) == direction]

    def received_codes(self) -> list[int]:
        """Status codes of all responses sipp received, in order."""
        codes = []
        for line in self._first_lines("received"):
            m = re.match(r"SIP/2\.0 (\d{3})", line)
            if m:
                codes.append(int(m.group(1)))
        return codes

    def received_requests(self) -> list[str]:
        """Methods of all requests sipp received, in order."""
        return [
            line.split(" ", 1)[0]
            for line in self._first_lines("received")
            if not line.startswith("SIP/2.0")
        ]

    def sent_first_lines(self) -> list[str]:
        return self._first_lines("sent")

    def describe(self) -> str:
        status = "timed out" if self.timed_out else f"exit {self.returncode}"
        parts = [f"sipp {status}: {' '.join(self.command)}"]
        if self.stats:
            parts.append(f"stats: {self.stats}")
        if self.stderr.strip():
            parts.append("stderr:\n" + _tail(self.stderr, 20))
        if self.errors.strip():
            parts.append("errors log:\n" + _tail(self.errors, 60))
        if self.messages.strip():
            parts.append("message trace (tail):\n" + _tail(self.messages, 80))
        return "\n".join(parts)

    def check(self) -> SippResult:
        if not self.ok:
            raise AssertionError(self.describe())
        return self


def _parse_stats(stdout: str) -> dict[str, int]:
    stats: dict[str, int] = {}
    for label, key in (
        ("Successful call", "successful"),
        ("Failed call", "failed"),
        ("Total Calls created", "created"),
    ):
        found = re.findall(rf"{label}\s*\|[^|\n]*\|\s*(\d+)", stdout)
        if found:
            stats[key] = int(found[-1])
    return stats


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _sipp_argv(
    scenario: str | os.PathLike[str],
    *,
    transport: str,
    local_port: int,
    service: str | None,
    auth_user: str | None,
    auth_pass: str | None,
    auth_uri: str | None,
    keys: Mapping[str, str],
    calls: int,
    rate: float | None,
    timeout: float,
    recv_timeout: float | None,
    csv_inject: Path | None,
    call_duration_ms: int | None,
    workdir: Path,
    extra_args: Sequence[str],
) -> list[str]:
    sipp = require_tool("sipp")
    resolved = scenario_path(scenario)
    argv = [sipp]
    argv += ["-sf", str(resolved)] if isinstance(resolved, Path) else ["-sn", resolved]
    argv += ["-t", _transport(transport)[0], "-i", HOST, "-p", str(local_port)]
    argv += ["-m", str(calls), "-nostdin"]
    argv += ["-timeout", f"{timeout:g}s", "-timeout_error"]
    argv += ["-trace_msg", "-message_file", str(workdir / "messages.log")]
    argv += ["-trace_err", "-error_file", str(workdir / "errors.log")]
    argv += ["-trace_logs", "-log_file", str(workdir / "actions.log")]
    if rate is not None:
        argv += ["-r", f"{rate:g}", "-rp", "1000"]
    if recv_timeout is not None:
        argv += ["-recv_timeout", str(int(recv_timeout * 1000))]
    if call_duration_ms is not None:
        argv += ["-d", str(call_duration_ms)]
    if service is not None:
        argv += ["-s", service]
    if auth_user is not None:
        argv += ["-au", auth_user]
    if auth_pass is not None:
        argv += ["-ap", auth_pass]
    if auth_uri is not None:
        argv += ["-auth_uri", auth_uri.removeprefix("sip:")]
    if csv_inject is not None:
        argv += ["-inf", str(csv_inject)]
    for key, value in keys.items():
        argv += ["-key", key, value]
    argv += list(extra_args)
    return argv


def run_sipp(
    scenario: str | os.PathLike[str],
    target: str,
    *,
    transport: str = "u1",
    service: str | None = None,
    auth_user: str | None = None,
    auth_pass: str | None = None,
    auth_uri: str | None = None,
    extra_keys: Mapping[str, str] | None = None,
    calls: int = 1,
    rate: float | None = None,
    timeout: float = 30,
    recv_timeout: float | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_server_name: str | None = None,
    local_port: int = 0,
    csv_inject: Path | None = None,
    call_duration_ms: int | None = None,
    extra_args: Sequence[str] = (),
) -> SippResult:
    """Run sipp in the foreground against *target* ("host:port") until -m calls end.

    *scenario*: a Path, a file name under tests/e2e/scenarios ("register_auth"),
    or a sipp built-in ("uac").  *transport*: u1 (UDP), t1 (TCP) or l1 (TLS:
    sipp speaks TCP to a TlsRelay that verifies the server against *tls_ca*).
    *auth_uri*: the digest uri sipp signs (sipp prefixes "sip:"); without it
    sipp signs "sip:TARGET", not the Request-URI.
    Bounded twice: sipp's own -timeout (with -timeout_error) and a process
    timeout a little longer.  Exit 0 means every call succeeded.
    """
    relay: TlsRelay | None = None
    if _is_tls(transport):
        host, _, port = target.rpartition(":")
        relay = TlsRelay.to_tls_server((host, int(port)), tls_ca, server_hostname=tls_server_name)
        relay.start()
        target = relay.address
    try:
        attempts = 3 if local_port == 0 else 1
        result: SippResult | None = None
        for _ in range(attempts):
            port = local_port or free_port()
            keys = default_keys(transport, port)
            keys.update(extra_keys or {})
            with tempfile.TemporaryDirectory(prefix="sipp-") as tmp:
                workdir = Path(tmp)
                argv = _sipp_argv(
                    scenario,
                    transport=transport,
                    local_port=port,
                    service=service,
                    auth_user=auth_user,
                    auth_pass=auth_pass,
                    auth_uri=auth_uri,
                    keys=keys,
                    calls=calls,
                    rate=rate,
                    timeout=timeout,
                    recv_timeout=recv_timeout,
                    csv_inject=csv_inject,
                    call_duration_ms=call_duration_ms,
                    workdir=workdir,
                    extra_args=extra_args,
                )
                result = _run_foreground([*argv, target], workdir, timeout + 15)
            if result.returncode != _SIPP_BIND_FAILED:
                break
        assert result is not None
        return result
    finally:
        if relay is not None:
            relay.close()


def _run_foreground(argv: list[str], workdir: Path, limit: float) -> SippResult:
    # stdout/stderr go to files: sipp writes its screens at exit, and a pipe
    # nobody reads could fill up.
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir)
        timed_out = False
        try:
            returncode: int | None = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait(timeout=10)
            returncode = None
    stdout = _read(out_path)
    return SippResult(
        command=argv,
        returncode=returncode,
        stdout=stdout,
        stderr=_read(err_path),
        messages=_read(workdir / "messages.log"),
        errors=_read(workdir / "errors.log"),
        timed_out=timed_out,
        stats=_parse_stats(stdout),
    )


# Convenience wrappers: the right digest uri and keys for each scenario.


def sipp_register(
    target: str,
    user: str,
    password: str,
    *,
    domain: str = DOMAIN,
    expires: int = 300,
    contact_port: int | None = None,
    **kwargs: Any,
) -> SippResult:
    """register_auth.xml: REGISTER, 401, REGISTER with digest, 200."""
    keys = {"domain": domain, "expires": str(expires), **kwargs.pop("extra_keys", {})}
    if contact_port is not None:
        keys["contact_port"] = str(contact_port)
    return run_sipp(
        "register_auth",
        target,
        service=user,
        auth_pass=password,
        auth_uri=domain,
        extra_keys=keys,
        **kwargs,
    )


def sipp_bad_register(
    target: str, user: str, password: str, *, domain: str = DOMAIN, **kwargs: Any
) -> SippResult:
    """register_bad_auth.xml: succeeds when the server refuses (401/403)."""
    keys = {"domain": domain, **kwargs.pop("extra_keys", {})}
    return run_sipp(
        "register_bad_auth",
        target,
        service=user,
        auth_pass=password,
        auth_uri=domain,
        extra_keys=keys,
        **kwargs,
    )


def sipp_message(
    target: str,
    user: str,
    password: str,
    to_user: str,
    text: str = "hello from sipp",
    *,
    domain: str = DOMAIN,
    **kwargs: Any,
) -> SippResult:
    """message_auth.xml: MESSAGE, 407, MESSAGE with digest, 200/202."""
    keys = {"domain": domain, "to_user": to_user, "text": text, **kwargs.pop("extra_keys", {})}
    return run_sipp(
        "message_auth",
        target,
        service=user,
        auth_pass=password,
        auth_uri=f"{to_user}@{domain}",
        extra_keys=keys,
        **kwargs,
    )


def sipp_call(
    target: str,
    user: str,
    password: str,
    to_user: str,
    *,
    domain: str = DOMAIN,
    duration_ms: int = 0,
    **kwargs: Any,
) -> SippResult:
    """uac_call.xml: INVITE (407 handled), 200, ACK, pause, BYE, 200."""
    keys = {"domain": domain, "to_user": to_user, **kwargs.pop("extra_keys", {})}
    return run_sipp(
        "uac_call",
        target,
        service=user,
        auth_pass=password,
        auth_uri=f"{to_user}@{domain}",
        extra_keys=keys,
        call_duration_ms=duration_ms,
        **kwargs,
    )


def sipp_cancel(
    target: str, user: str, password: str, to_user: str, *, domain: str = DOMAIN, **kwargs: Any
) -> SippResult:
    """uac_cancel.xml: INVITE (407 handled), 180, CANCEL, 200 + 487, ACK."""
    keys = {"domain": domain, "to_user": to_user, **kwargs.pop("extra_keys", {})}
    return run_sipp(
        "uac_cancel",
        target,
        service=user,
        auth_pass=password,
        auth_uri=f"{to_user}@{domain}",
        extra_keys=keys,
        **kwargs,
    )


class SippUAS:
    """A sipp UAS in the background on its own ephemeral port on 127.0.0.1.

    Typical fake callee (UDP)::

        bob = SippUAS("uas_answer", service="bob")
        bob.register(server, password="pw", domain="localhost").check()
        with bob:                      # listens on the port that registered
            ...caller calls bob through the server...
            bob.wait(timeout=20).check()

    ``start()`` returns once sipp has bound its port (seen in /proc), so a
    peer can send at once.  sipp exits after *calls* calls (-m); ``wait()``
    collects the result, ``stop()`` ends it early.  For TLS, register over
    ``transport="l1"`` through a relay only if the server reuses the
    registration connection; a TCP sipp UAS can also sit behind
    ``TlsRelay.tls_terminator``.
    """

    def __init__(
        self,
        scenario: str | os.PathLike[str] = "uas_answer",
        *,
        transport: str = "u1",
        service: str = "bob",
        calls: int = 1,
        timeout: float = 60,
        local_port: int = 0,
        extra_keys: Mapping[str, str] | None = None,
        call_duration_ms: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10,
    ) -> None:
        if _is_tls(transport):
            raise ValueError("sipp cannot listen on TLS here; use t1 behind TlsRelay")
        self.scenario = scenario
        self.transport = transport
        self.service = service
        self.calls = calls
        self.timeout = timeout
        self.local_port = local_port
        self.extra_keys = dict(extra_keys or {})
        self.call_duration_ms = call_duration_ms
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: SippResult | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._argv: list[str] = []
        self._files: list[Any] = []

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def uri(self, user: str | None = None) -> str:
        """Direct URI of this UAS, for peer-to-peer tests."""
        transport = _transport(self.transport)[2]
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{user or self.service}@{self.address}{suffix}"

    def start(self) -> SippUAS:
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> SippUAS:
        reserved = self.port or self.local_port  # a port register() used
        attempts = 1 if reserved else 3
        for attempt in range(attempts):
            self._launch(reserved or free_port())
            proc = self.proc
            assert proc is not None
            proto = "udp" if _transport(self.transport)[0] == "u1" else "tcp"
            port = self.port
            try:
                wait_until(
                    functools.partial(_is_bound, proc.pid, port, proto),
                    self.start_timeout,
                    f"sipp UAS to bind {proto} port {port}",
                    alive=functools.partial(_alive, proc),
                )
                return self
            except RuntimeError:
                result = self._collect()
                if result.returncode == _SIPP_BIND_FAILED and attempt + 1 < attempts:
                    continue
                raise RuntimeError("sipp UAS did not start\n" + result.describe()) from None
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        self._cleanup_files()
        self._tmp = tempfile.TemporaryDirectory(prefix="sipp-uas-")
        workdir = Path(self._tmp.name)
        self.port = port
        keys = default_keys(self.transport, port)
        keys.update(self.extra_keys)
        self._argv = _sipp_argv(
            self.scenario,
            transport=self.transport,
            local_port=port,
            service=self.service,
            auth_user=None,
            auth_pass=None,
            auth_uri=None,
            keys=keys,
            calls=self.calls,
            rate=None,
            timeout=self.timeout,
            recv_timeout=None,
            csv_inject=None,
            call_duration_ms=self.call_duration_ms,
            workdir=workdir,
            extra_args=self.extra_args,
        )
        out = (workdir / "stdout.txt").open("wb")
        err = (workdir / "stderr.txt").open("wb")
        self._files = [out, err]
        self.result = None
        self.proc = subprocess.Popen(
            self._argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir
        )

    def _collect(self, timed_out: bool = False) -> SippResult:
        assert self.proc is not None and self._tmp is not None
        for f in self._files:
            f.close()
        self._files = []
        workdir = Path(self._tmp.name)
        stdout = _read(workdir / "stdout.txt")
        self.result = SippResult(
            command=self._argv,
            returncode=self.proc.returncode,
            stdout=stdout,
            stderr=_read(workdir / "stderr.txt"),
            messages=_read(workdir / "messages.log"),
            errors=_read(workdir / "errors.log"),
            timed_out=timed_out,
            stats=_parse_stats(stdout),
        )
        return self.result

    def register(
        self,
        registrar: str,
        *,
        password: str,
        user: str | None = None,
        transport: str | None = None,
        **kwargs: Any,
    ) -> SippResult:
        """REGISTER *user* (default: the UAS's -s user) so calls reach this UAS.

        Before ``start()`` (what Conclave needs): sipp registers from the very
        UDP port the UAS will then listen on, because Conclave, like Lync,
        routes to the *flow* a REGISTER came from (source address, or the TCP/
        TLS connection), not to the Contact.  ``start()`` reuses that port.
        After ``start()``: registers from another port with the Contact
        pointing at the UAS, for a server that routes by Contact.

        A sipp callee over TCP/TLS cannot work with a flow-routing server (the
        REGISTER's connection closes when that sipp exits): use Baresip.
        """
        transport = transport or self.transport
        if _transport(transport)[2] != _transport(self.transport)[2]:
            raise ValueError("register over the transport the UAS listens on")
        if self.proc is None:
            if not self.port:
                self.port = self.local_port or free_port()
            kwargs.setdefault("local_port", self.port)
        return sipp_register(
            registrar,
            user or self.service,
            password,
            contact_port=self.port,
            transport=transport,
            **kwargs,
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to finish its -m calls (or its own -timeout)."""
        assert self.proc is not None, "not started"
        if self.result is not None and not self.running():
            return self.result
        limit = self.timeout + 15 if timeout is None else timeout
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return self._collect(timed_out=True)
        return self._collect()

    def stop(self) -> SippResult:
        """End sipp now (SIGTERM, then SIGKILL) and collect what it did."""
        assert self.proc is not None, "not started"
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.result is None:
            self._collect()
        assert self.result is not None
        return self.result

    def _cleanup_files(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def close(self) -> None:
        if self.proc is not None:
            self.stop()
        self._cleanup_files()

    def __enter__(self) -> SippUAS:
        return self if self.running() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
