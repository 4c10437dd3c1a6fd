"""A headless baresip driven over ctrl_tcp, for end-to-end tests (see peers.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .peers_base import (
    _ANSI,
    HOST,
    BoundSocket,
    bound_sockets,
    free_port,
    in_ci,
    require_tool,
    wait_until,
)

# --------------------------------------------------------------------------
# baresip


class BaresipError(AssertionError):
    """baresip refused a command, failed to register, or died."""


_MODULE_DIRS = (
    "/usr/lib/baresip/modules",
    "/usr/lib/x86_64-linux-gnu/baresip/modules",
    "/usr/lib/aarch64-linux-gnu/baresip/modules",
    "/usr/local/lib/baresip/modules",
)

# Modules the harness config loads; all ship in Debian 12's baresip-core.
BARESIP_MODULES = ("stdio", "g711", "aubridge", "uuid", "account", "contact", "menu")
BARESIP_APP_MODULES = ("presence", "ctrl_tcp")


def baresip_module_dir() -> Path:
    override = os.environ.get("CONCLAVE_BARESIP_MODULES")
    candidates = [override] if override else []
    candidates += list(_MODULE_DIRS)
    for candidate in candidates:
        if candidate and (Path(candidate) / "ctrl_tcp.so").is_file():
            return Path(candidate)
    reason = "baresip modules (ctrl_tcp.so) not found; install baresip-core"
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)  # outside CI only: under CI=true it failed above


class _Inbox:
    """Thread-safe list of items that waits hand out (and remove) by predicate."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, predicate: Callable[[Any], bool], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, item in enumerate(self._items):
                    if predicate(item):
                        return self._items.pop(index)
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise EOFError("peer closed")
                if remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self._items)


@dataclass(frozen=True)
class ReceivedMessage:
    peer: str
    text: str


_MESSAGE_LINE = re.compile(r'^(sips?:\S+): "(.*)$')
_PRESENCE_LINE = re.compile(r"^<(sips?:[^>]+)> changed status from (\S+) to (\S+)$")


class Baresip:
    """A headless baresip user agent, driven over ctrl_tcp, in a temp config dir.

    Account (one line in ``accounts``)::

        <AOR>;auth_pass=PW[;auth_user=U];outbound="OUTBOUND";regint=N;answermode=M

    *outbound* is the proxy URI including ``;transport=tls`` for TLS (given
    *transport*, it is appended for you); *ca_file* becomes ``sip_cafile``.
    Without *outbound* (peer to peer) nothing registers and ``sip_udp_port``
    / ``direct_uri`` say where to send.  *contacts* are written to the
    contacts file (``send_message`` needs its target there: baresip 1.0
    sends MESSAGE only to the current contact); *presence_contacts* get
    ``;presence=p2p`` and are SUBSCRIBEd.

    Events come from ctrl_tcp (JSON in netstrings; REGISTER_OK, CALL_* ...)
    and from baresip's stdout (incoming MESSAGE text, presence changes),
    each read by a thread into an inbox; ``wait_*`` take from the inbox with
    a deadline.  Audio: aubridge as source and player (no sound hardware).
    """

    def __init__(
        self,
        aor: str,
        *,
        password: str | None = None,
        auth_user: str | None = None,
        outbound: str | None = None,
        transport: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        certificate: str | os.PathLike[str] | None = None,
        register: bool | None = None,
        regint: int = 600,
        answermode: str = "manual",
        publish: bool = False,
        contacts: Iterable[str] = (),
        presence_contacts: Iterable[str] = (),
        account_params: Mapping[str, str] | None = None,
        extra_config: Mapping[str, str] | None = None,
        sip_listen: str = f"{HOST}:0",
        sip_trace: bool = False,
        start_timeout: float = 15,
        name: str | None = None,
    ) -> None:
        self.aor = aor
        self.password = password
        self.auth_user = auth_user
        if outbound and transport and "transport=" not in outbound:
            outbound = f"{outbound};transport={transport}"
        self.outbound = outbound
        self.transport = transport
        self.ca_file = Path(ca_file) if ca_file else None
        self.certificate = Path(certificate) if certificate else None
        self.register = bool(outbound) if register is None else register
        self.regint = regint if self.register else 0
        self.answermode = answermode
        self.publish = publish
        self.contacts = list(contacts)
        self.presence_contacts = list(presence_contacts)
        self.account_params = dict(account_params or {})
        self.extra_config = dict(extra_config or {})
        self.sip_listen = sip_listen
        self.sip_trace = sip_trace
        self.start_timeout = start_timeout
        self.name = name or aor
        self.ctrl_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_dir: Path | None = None
        self.log: list[str] = []
        self.messages: list[ReceivedMessage] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ctrl: socket.socket | None = None
        self._lines = _Inbox()
        self._events = _Inbox()
        self._responses = _Inbox()
        self._threads: list[threading.Thread] = []
        self._tokens = itertools.count(1)
        self._send_lock = threading.Lock()

    # -- configuration ----------------------------------------------------

    @property
    def user(self) -> str:
        return self.aor.split(":", 1)[1].split("@", 1)[0]

    def account_line(self) -> str:
        params = []
        if self.password is not None:
            params.append(f"auth_pass={self.password}")
        if self.auth_user is not None:
            params.append(f"auth_user={self.auth_user}")
        if self.outbound:
            params.append(f'outbound="{self.outbound}"')
        params.append(f"regint={self.regint}")
        params.append(f"answermode={self.answermode}")
        params.append(f"pubint={600 if self.publish else 0}")
        params += [f"{k}={v}" for k, v in self.account_params.items()]
        return f"<{self.aor}>;" + ";".join(params)

    def config_text(self) -> str:
        modules = baresip_module_dir()
        lines = {
            "poll_method": "epoll",
            "sip_listen": self.sip_listen,
            # Media and SDP on loopback too (default: the first interface).
            "net_interface": HOST,
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_player": "aubridge,nil",
            "audio_source": "aubridge,nil",
            "audio_alert": "aubridge,nil",
            "module_path": str(modules),
            "ctrl_tcp_listen": f"{HOST}:{self.ctrl_port}",
        }
        if self.ca_file:
            lines["sip_cafile"] = str(self.ca_file)
        if self.certificate:
            lines["sip_certificate"] = str(self.certificate)
        lines.update(self.extra_config)
        text = [f"{k}\t{v}" for k, v in lines.items()]
        text += [f"module\t{m}.so" for m in ("stdio", "g711", "aubridge")]
        text += [f"module_tmp\t{m}.so" for m in ("uuid", "account")]
        text += [f"module_app\t{m}.so" for m in ("contact", "menu", *BARESIP_APP_MODULES)]
        return "\n".join(text) + "\n"

    def _write_config(self) -> None:
        assert self.config_dir is not None
        (self.config_dir / "config").write_text(self.config_text())
        (self.config_dir / "accounts").write_text(self.account_line() + "\n")
        entries = [f"<{uri}>" for uri in self.contacts]
        entries += [f"<{uri}>;presence=p2p" for uri in self.presence_contacts]
        (self.config_dir / "contacts").write_text("".join(e + "\n" for e in entries))
        first = (self.contacts + self.presence_contacts)[:1]
        if first:
            (self.config_dir / "current_contact").write_text(first[0])

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Baresip:
        require_tool("baresip")
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> Baresip:
        self._tmp = tempfile.TemporaryDirectory(prefix="baresip-")
        self.config_dir = Path(self._tmp.name)
        for attempt in range(3):
            self.ctrl_port = free_port("tcp")
            self._write_config()
            self._launch()
            outcome = self._wait_started()
            if outcome == "ready":
                break
            self._terminate()
            if outcome != "ctrl_port_taken" or attempt == 2:
                raise BaresipError(f"baresip {self.name} did not start\n{self.log_tail()}")
        self._connect_ctrl()
        return self

    def _launch(self) -> None:
        assert self.config_dir is not None
        argv = [require_tool("baresip"), "-f", str(self.config_dir)]
        if self.sip_trace:
            argv.append("-s")
        stdbuf = shutil.which("stdbuf")
        if stdbuf:  # baresip's stdout is block-buffered into a pipe otherwise
            argv = [stdbuf, "-oL", "-eL", *argv]
        self.log = []
        self._lines = _Inbox()
        self._events = _Inbox()
        self._responses = _Inbox()
        # stdin stays an open pipe: the stdio module (needed for incoming
        # MESSAGE text on stdout) must not see EOF.
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.config_dir,
        )
        reader = threading.Thread(
            target=self._read_stdout, args=(self.proc,), name="baresip-stdout", daemon=True
        )
        reader.start()
        self._threads.append(reader)

    def _wait_started(self) -> str:
        def started(line: Any) -> bool:
            return line in ("ready", "ctrl_port_taken", "init_failed")

        try:
            return str(self._lines.take(started, self.start_timeout))
        except TimeoutError:
            return "timeout"
        except EOFError:
            return "exited"

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        pending: tuple[str, list[str]] | None = None
        for raw in proc.stdout:
            text = _ANSI.sub("", raw.decode("utf-8", errors="replace")).rstrip("\r\n")
            for line in text.split("\r"):
                self.log.append(line)
                if pending is not None:
                    peer, parts = pending
                    if line.endswith('"') or len(parts) > 50:
                        parts.append(line[:-1] if line.endswith('"') else line)
                        self._got_message(peer, "\n".join(parts))
                        pending = None
                    else:
                        parts.append(line)
                    continue
                pending = self._classify(line)
        self._lines.close()
        self._events.close()
        self._responses.close()

    def _classify(self, line: str) -> tuple[str, list[str]] | None:
        if line == "baresip is ready.":
            self._lines.put("ready")
        elif "ctrl_tcp: failed to listen" in line:
            self._lines.put("ctrl_port_taken")
        elif "init failed" in line:
            self._lines.put("init_failed")
        elif m := _PRESENCE_LINE.match(line):
            self._events.put(
                {"type": "PRESENCE", "peeruri": m.group(1), "from": m.group(2), "to": m.group(3)}
            )
        elif m := _MESSAGE_LINE.match(line):
            body = m.group(2)
            if body.endswith('"'):
                self._got_message(m.group(1), body[:-1])
            else:  # body with line breaks: collect until the closing quote
                return m.group(1), [body]
        return None

    def _got_message(self, peer: str, text: str) -> None:
        message = ReceivedMessage(peer, text)
        self.messages.append(message)
        self._events.put({"type": "MESSAGE", "peeruri": peer, "message": message})

    def _connect_ctrl(self) -> None:
        sock = socket.create_connection((HOST, self.ctrl_port), timeout=5)
        sock.settimeout(None)
        self._ctrl = sock
        reader = threading.Thread(
            target=self._read_ctrl, args=(sock,), name="baresip-ctrl", daemon=True
        )
        reader.start()
        self._threads.append(reader)

    def _read_ctrl(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                head, sep, rest = buf.partition(b":")
                if not sep or not head.isdigit():
                    break
                size = int(head)
                if len(rest) < size + 1:
                    break
                payload, buf = rest[:size], rest[size + 1 :]
                try:
                    obj = json.loads(payload)
                except ValueError:
                    continue
                if obj.get("response"):
                    self._responses.put(obj)
                elif obj.get("event"):
                    self._events.put(obj)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return f"--- baresip {self.name} log (tail) ---\n" + "\n".join(self.log[-lines:])

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def close(self) -> None:
        """Quit baresip (unregistering), then make sure it is gone."""
        if self.running() and self._ctrl is not None:
            with contextlib.suppress(Exception):
                self._send("quit", "")
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert self.proc is not None
                self.proc.wait(timeout=5)
        self._terminate()
        if self._ctrl is not None:
            with contextlib.suppress(OSError):
                self._ctrl.close()
            self._ctrl = None
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses --------------------------------------------------------

    def sip_ports(self) -> list[BoundSocket]:
        """baresip's SIP sockets on 127.0.0.1 (UDP, then TCP and TLS listeners)."""
        assert self.proc is not None
        return [
            s for s in bound_sockets(self.proc.pid) if s.host == HOST and s.port != self.ctrl_port
        ]

    @property
    def sip_udp_port(self) -> int:
        ports = [s.port for s in self.sip_ports() if s.proto == "udp"]
        if not ports:
            raise BaresipError(f"no SIP UDP socket found\n{self.log_tail()}")
        return ports[0]

    @property
    def direct_uri(self) -> str:
        """sip:USER@127.0.0.1:PORT — reach this UA peer to peer over UDP."""
        return f"sip:{self.user}@{HOST}:{self.sip_udp_port}"

    # -- commands ---------------------------------------------------------

    def _send(self, command: str, params: str) -> str:
        token = str(next(self._tokens))
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        with self._send_lock:
            assert self._ctrl is not None, "not started"
            self._ctrl.sendall(str(len(payload)).encode() + b":" + payload + b",")
        return token

    def command(self, command: str, params: str = "", *, timeout: float = 10) -> str:
        """Run a baresip command (long name, no slash); return its text output."""
        token = self._send(command, params)
        try:
            response = self._responses.take(lambda r: r.get("token") == token, timeout)
        except (TimeoutError, EOFError) as exc:
            raise BaresipError(
                f"no answer to {command!r} from baresip {self.name}\n{self.log_tail()}"
            ) from exc
        data = str(response.get("data", ""))
        if not response.get("ok", False):
            raise BaresipError(f"baresip {self.name}: {command} {params!r} failed: {data}")
        return _ANSI.sub("", data)

    def wait_event(
        self,
        types: str | Iterable[str],
        *,
        timeout: float = 10,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Take the oldest unconsumed event of one of *types* (waiting if need be)."""
        wanted = {types} if isinstance(types, str) else set(types)

        def match(event: dict[str, Any]) -> bool:
            return event.get("type") in wanted and (predicate is None or predicate(event))

        try:
            event: dict[str, Any] = self._events.take(match, timeout)
            return event
        except TimeoutError:
            seen = [e.get("type") for e in self._events.snapshot()]
            raise BaresipError(
                f"baresip {self.name}: no {sorted(wanted)} within {timeout:g}s "
                f"(unconsumed events: {seen})\n{self.log_tail()}"
            ) from None
        except EOFError:
            raise BaresipError(
                f"baresip {self.name} exited waiting for {sorted(wanted)}\n{self.log_tail()}"
            ) from None

    def wait_registered(self, timeout: float = 10) -> dict[str, Any]:
        event = self.wait_event({"REGISTER_OK", "REGISTER_FAIL"}, timeout=timeout)
        if event["type"] != "REGISTER_OK":
            raise BaresipError(
                f"baresip {self.name}: registration failed: {event.get('param')}\n{self.log_tail()}"
            )
        return event

    def wait_register_failed(self, timeout: float = 10) -> dict[str, Any]:
        event = self.wait_event({"REGISTER_OK", "REGISTER_FAIL"}, timeout=timeout)
        if event["type"] != "REGISTER_FAIL":
            raise BaresipError(f"baresip {self.name}: registered, expected a failure")
        return event

    def select_contact(self, uri: str) -> None:
        """Make *uri* the current contact (it must be in the contacts file)."""
        marker = f"<{uri}>"
        listing = self.command("contacts")
        for line in listing.splitlines():
            if line.lstrip().startswith(">") and marker in line:
                return
        count = max(1, len(self.contacts) + len(self.presence_contacts))
        for _ in range(count):
            if marker in self.command("contact_next"):
                return
        raise BaresipError(
            f"{uri} is not a contact of baresip {self.name}; pass it in contacts=[...]"
        )

    def send_message(self, uri: str, text: str) -> None:
        """Send a pager-mode MESSAGE to *uri* (a contact, see ``contacts``)."""
        self.select_contact(uri)
        self.command("message", text)

    def wait_message_from(self, timeout: float = 10) -> ReceivedMessage:
        event = self.wait_event("MESSAGE", timeout=timeout)
        message: ReceivedMessage = event["message"]
        return message

    def wait_message(self, timeout: float = 10) -> str:
        """Text of the next incoming MESSAGE."""
        return self.wait_message_from(timeout).text

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def accept(self) -> None:
        self.command("accept")

    def hangup(self) -> None:
        self.command("hangup")

    def wait_call_incoming(self, timeout: float = 10) -> dict[str, Any]:
        return self.wait_event("CALL_INCOMING", timeout=timeout)

    def wait_call_ringing(self, timeout: float = 10) -> dict[str, Any]:
        return self.wait_event("CALL_RINGING", timeout=timeout)

    def wait_call_established(self, timeout: float = 10) -> dict[str, Any]:
        event = self.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, timeout=timeout)
        if event["type"] != "CALL_ESTABLISHED":
            raise BaresipError(
                f"baresip {self.name}: call closed before it was established: "
                f"{event.get('param')}\n{self.log_tail()}"
            )
        return event

    def wait_call_closed(self, timeout: float = 10) -> dict[str, Any]:
        """The CALL_CLOSED event; its ``param`` holds the reason."""
        return self.wait_event("CALL_CLOSED", timeout=timeout)

    def set_presence(self, status: str) -> None:
        """ "online" or "offline" (presence module: NOTIFY to watchers, PUBLISH if publish)."""
        if status not in ("online", "offline"):
            raise ValueError("baresip 1.0 knows only online and offline")
        self.command(f"presence_{status}")

    def wait_presence(self, uri: str, status: str, timeout: float = 10) -> None:
        """Wait until the watched contact *uri* shows *status* (online/offline).

        baresip announces no event for this (it logs a change only between
        two known states), so this polls the contacts list until the
        deadline.  The SUBSCRIBE goes out about a second after start, and
        its first NOTIFY carries the watched user's current status.
        """
        want = status.lower()
        wait_until(
            lambda: self.presence_of(uri).lower() == want,
            timeout,
            f"{uri} to be {status} at baresip {self.name}",
            interval=0.05,
            alive=self.running,
        )

    def presence_of(self, uri: str) -> str:
        """Current status of contact *uri* as shown by the contacts command."""
        for line in self.command("contacts").splitlines():
            if f"<{uri}>" in line:
                return line.lstrip(" >").split()[0]
        raise BaresipError(f"{uri} is not a contact of baresip {self.name}")
