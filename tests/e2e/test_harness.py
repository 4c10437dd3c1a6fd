"""The real-peer harness proven peer to peer, without the Conclave server.

Each sipp scenario the server tests use runs here against a sipp stand-in
(tests/e2e/scenarios/stub_*.xml challenge and verify digests like the server
will) or against its counterpart scenario; baresip instances message, call
and watch each other directly, and register over TLS to a tiny scripted
registrar.  Every wait has a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import peers, peers_base
from tests.e2e.peers import (
    Baresip,
    SippUAS,
    TlsRelay,
    require_tool,
    run_sipp,
    run_sipsak,
    sipp_bad_register,
    sipp_call,
    sipp_cancel,
    sipp_message,
    sipp_register,
)

pytestmark = pytest.mark.peers

# The stub scenarios accept exactly these credentials (sipp's verifyauth
# takes literals only).
USER, PASSWORD = "alice", "secret"


def digest_ok(request: str, password: str, *, header: str = "Authorization") -> bool:
    """Recompute the MD5 (qop=auth) digest in *request*'s *header* (RFC 2617)."""
    found = re.search(rf"(?im)^{header}\s*:\s*digest\s+(.*)$", request)
    if found is None:
        return False
    params: dict[str, str] = {}
    for key, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', found.group(1)):
        params[key] = quoted or bare

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    method = request.split(" ", 1)[0]
    ha1 = md5(f"{params.get('username')}:{params.get('realm')}:{password}")
    ha2 = md5(f"{method}:{params.get('uri')}")
    if params.get("qop"):
        expected = md5(
            f"{ha1}:{params.get('nonce')}:{params.get('nc')}:{params.get('cnonce')}:"
            f"{params.get('qop')}:{ha2}"
        )
    else:
        expected = md5(f"{ha1}:{params.get('nonce')}:{ha2}")
    return params.get("response") == expected


def _traced(result: peers.SippResult, direction: str) -> list[str]:
    """Full texts of the messages sipp traced as "sent" or "received", in order."""
    texts = []
    for block in result.messages.split("\n-----------------------------------------------"):
        header, _, body = block.strip("\n").partition("\n\n")
        if re.search(rf"message {direction}\b", header):
            texts.append(body)
    return texts


def _message_to(result: peers.SippResult, first_line_start: str, direction: str = "") -> str:
    """The first traced message whose first line starts with *first_line_start*."""
    for dir_ in [direction] if direction else ["sent", "received"]:
        for body in _traced(result, dir_):
            if body.startswith(first_line_start):
                return body
    raise AssertionError(f"no {first_line_start!r} in the trace\n{result.describe()}")


def _nth(result: peers.SippResult, direction: str, pattern: str, index: int) -> str:
    matching = [m for m in _traced(result, direction) if re.search(pattern, m, re.M)]
    assert len(matching) > index, result.describe()
    return matching[index]


# --------------------------------------------------------------------------
# Tools


@pytest.mark.parametrize("tool", ["sipp", "sipsak", "baresip"])
def test_peer_tool_is_installed(tool: str) -> None:
    path = require_tool(tool)
    assert Path(path).is_file()
    assert re.search(r"\d+\.\d+", peers.tool_version(tool))


def test_baresip_modules_the_harness_loads_are_present() -> None:
    require_tool("baresip")
    modules = peers.baresip_module_dir()
    for name in (*peers.BARESIP_MODULES, *peers.BARESIP_APP_MODULES):
        assert (modules / f"{name}.so").is_file(), name


def test_missing_tool_fails_under_ci_and_skips_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_tool("no-such-sip-peer-tool")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="install-peers"):
        require_tool("no-such-sip-peer-tool")


# --------------------------------------------------------------------------
# sipp mechanics


def test_run_sipp_builtin_uac_against_sipp_uas() -> None:
    with SippUAS("uas", calls=1, timeout=20) as uas:
        assert uas.port and peers_base._is_bound(uas.proc.pid, uas.port, "udp")  # type: ignore[union-attr]
        result = run_sipp("uac", uas.address, timeout=15).check()
        assert result.stats.get("successful") == 1
        assert result.received_codes()[-2:] == [200, 200]
        uas_result = uas.wait(timeout=20).check()
        assert uas_result.received_requests() == ["INVITE", "ACK", "BYE"]


def test_run_sipp_reports_failure_with_diagnostics() -> None:
    # Nobody answers on this port: the INVITE times out (bounded by -timeout).
    port = peers.free_port()
    result = run_sipp("uac", f"127.0.0.1:{port}", timeout=3)
    # -timeout_error turns the global timeout into exit 255 (a failed call is 1).
    assert not result.ok and result.returncode == 255
    assert "timed out after" in result.errors + result.stderr
    with pytest.raises(AssertionError, match="sipp exit 255"):
        result.check()


def test_sipp_uas_stop_collects_a_result() -> None:
    uas = SippUAS("uas_answer", timeout=30).start()
    try:
        assert uas.running()
    finally:
        result = uas.stop()
        uas.close()
    assert not uas.running()
    assert result.returncode is not None


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_uac_call_against_uas_answer(transport: str) -> None:
    with SippUAS("uas_answer", transport=transport, service="bob", timeout=20) as bob:
        result = run_sipp("uac_call", bob.address, transport=transport, service="carol").check()
        assert result.received_codes() == [180, 200, 200]
        assert bob.wait(timeout=20).check().received_requests() == ["INVITE", "ACK", "BYE"]


def test_uac_cancel_against_uas_ring_noanswer() -> None:
    with SippUAS("uas_ring_noanswer", service="bob", timeout=20) as bob:
        result = run_sipp("uac_cancel", bob.address, service="carol").check()
        assert result.received_codes() == [180, 200, 487]
        callee = bob.wait(timeout=20).check()
        assert callee.received_requests() == ["INVITE", "CANCEL", "ACK"]
        # The 487 repeats the INVITE's Via (same branch) and CSeq number.
        invite = _message_to(callee, "INVITE ")
        terminated = _message_to(callee, "SIP/2.0 487")
        invite_via = re.search(r"^Via: .*$", invite, re.M)
        assert invite_via and invite_via.group(0) in terminated
        assert "CSeq: 1 INVITE" in terminated


# --------------------------------------------------------------------------
# The authenticated scenarios against sipp stand-ins for the server


def test_register_auth_against_stub_registrar() -> None:
    with SippUAS("stub_registrar", service="stub", timeout=20) as registrar:
        result = sipp_register(registrar.address, USER, PASSWORD, timeout=15).check()
        assert result.received_codes() == [401, 200]
        registrar.wait(timeout=20).check()
    second = _nth(result, "sent", r"^CSeq: 2 REGISTER", 0)
    assert second.startswith("REGISTER sip:example.test SIP/2.0")
    # -auth_uri makes sipp sign the Request-URI, not "sip:127.0.0.1:PORT".
    assert re.search(
        r'^Authorization: Digest username="alice",.*uri="sip:example.test"', second, re.M
    )
    assert digest_ok(second, PASSWORD)


def test_register_with_wrong_password_fails_register_auth() -> None:
    with SippUAS("stub_registrar", service="stub", timeout=20) as registrar:
        result = sipp_register(registrar.address, USER, "wrong", timeout=10)
        assert not result.ok
        assert result.received_codes() == [401, 403]
        registrar.wait(timeout=20)


def test_register_bad_auth_succeeds_when_refused() -> None:
    with SippUAS("stub_registrar", service="stub", timeout=20) as registrar:
        result = sipp_bad_register(registrar.address, USER, "wrong", timeout=10).check()
        assert result.received_codes() == [401, 403]
        registrar.wait(timeout=20)


def test_message_auth_against_stub() -> None:
    with SippUAS("stub_message", service="stub", timeout=20) as proxy:
        result = sipp_message(proxy.address, USER, PASSWORD, "bob", "hi bob", timeout=15).check()
        assert result.received_codes() == [407, 202]
        stub = proxy.wait(timeout=20).check()
    second = _nth(stub, "received", r"^CSeq: 2 MESSAGE", 0)
    assert second.rstrip("\r\n").endswith("hi bob")
    assert re.search(r'^Proxy-Authorization: Digest .*uri="sip:bob@example.test"', second, re.M)
    assert digest_ok(second, PASSWORD, header="Proxy-Authorization")
    assert not digest_ok(second, "wrong", header="Proxy-Authorization")


def test_uac_call_with_digest_against_stub() -> None:
    with SippUAS("stub_call", service="stub", timeout=20) as proxy:
        result = sipp_call(proxy.address, USER, PASSWORD, "bob", duration_ms=200).check()
        assert result.received_codes() == [407, 100, 180, 200, 200]
        stub = proxy.wait(timeout=20).check()
        assert stub.received_requests() == ["INVITE", "ACK", "INVITE", "ACK", "BYE"]
    invite = _nth(stub, "received", r"^CSeq: 2 INVITE", 0)
    assert digest_ok(invite, PASSWORD, header="Proxy-Authorization")
    # ACK and BYE go to the 200's Contact, within the dialog.
    assert _nth(stub, "received", r"^CSeq: 3 BYE", 0).startswith("BYE sip:stub@127.0.0.1:")


def test_uac_cancel_with_digest_against_stub() -> None:
    with SippUAS("stub_cancel", service="stub", timeout=20) as proxy:
        result = sipp_cancel(proxy.address, USER, PASSWORD, "bob").check()
        assert result.received_codes() == [407, 180, 200, 487]
        stub = proxy.wait(timeout=20).check()
        assert stub.received_requests() == ["INVITE", "ACK", "INVITE", "CANCEL", "ACK"]
    invite = _nth(stub, "received", r"^CSeq: 2 INVITE", 0)
    cancel = _nth(stub, "received", r"^CSeq: 2 CANCEL", 0)
    assert digest_ok(invite, PASSWORD, header="Proxy-Authorization")
    branch = re.search(r"branch=([^;\s]+)", invite)
    assert branch and branch.group(1) in cancel


def test_sipp_uas_register_points_the_contact_at_the_uas() -> None:
    # The fake-callee pattern: one sipp answers calls, another registers it.
    with (
        SippUAS("stub_registrar", service="stub", timeout=20) as registrar,
        SippUAS("uas_answer", service=USER, timeout=20) as callee,
    ):
        callee.register(registrar.address, password=PASSWORD, timeout=15).check()
        seen = registrar.wait(timeout=20).check()
        assert f"Contact: <sip:{USER}@127.0.0.1:{callee.port};transport=udp>" in seen.messages
        # ...and the callee really answers on that port.
        run_sipp("uac_call", callee.address, service="carol").check()
        callee.wait(timeout=20).check()


def test_run_sipp_injects_users_from_csv(tmp_path: Path) -> None:
    # -inf: each call takes the next CSV line; [field0] is its first field.
    # (sipp 3.6 cannot nest [field0] inside [authentication ...]: give the
    # digest user and password with -au / -ap, or one run per user.)
    csv = tmp_path / "users.csv"
    csv.write_text("SEQUENTIAL\nalice\n")
    scenario = tmp_path / "register_csv.xml"
    text = (peers.SCENARIOS / "register_auth.xml").read_text().replace("[service]", "[field0]")
    scenario.write_text(text)
    with SippUAS("stub_registrar", service="stub", timeout=20) as registrar:
        run_sipp(
            scenario,
            registrar.address,
            csv_inject=csv,
            auth_user=USER,
            auth_pass=PASSWORD,
            auth_uri="example.test",
            timeout=15,
        ).check()
        assert "From: <sip:alice@example.test>" in registrar.wait(timeout=20).check().messages


# --------------------------------------------------------------------------
# TLS through the relay (Debian's sipp has no TLS)


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path
    other_cert: Path
    other_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from conclave.pki import create_ca

    base = tmp_path_factory.mktemp("e2e-pki")
    paths = []
    for name in ("good", "other"):
        ca = create_ca(base / name, common_name=f"E2E {name} CA")
        leaf = ca.issue_server(["sip.example.test"], ["127.0.0.1"])
        leaf.write(base / name / "server.crt", base / name / "server.key")
        paths += [ca.cert_path, base / name / "server.crt", base / name / "server.key"]
    return Pki(*paths)


def test_sipp_over_tls_relay_reaches_a_tls_port(pki: Pki) -> None:
    with (
        SippUAS("uas_answer", transport="t1", service="bob", timeout=20) as bob,
        TlsRelay.tls_terminator(("127.0.0.1", bob.port), pki.cert, pki.key) as tls_port,
    ):
        result = run_sipp(
            "uac_call", tls_port.address, transport="l1", tls_ca=pki.ca, service="carol"
        ).check()
        assert result.received_codes() == [180, 200, 200]
        invite = _message_to(bob.wait(timeout=20).check(), "INVITE ")
        assert "Via: SIP/2.0/TLS" in invite and ";transport=tls" in invite
        assert not tls_port.errors


def test_tls_relay_refuses_a_server_from_another_ca(pki: Pki) -> None:
    with (
        SippUAS("uas_answer", transport="t1", timeout=20) as bob,
        TlsRelay.tls_terminator(("127.0.0.1", bob.port), pki.other_cert, pki.other_key) as port,
    ):
        relay = TlsRelay.to_tls_server(("127.0.0.1", port.port), pki.ca).start()
        try:
            with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as conn:
                conn.sendall(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
                conn.settimeout(10)
                try:
                    data = conn.recv(100)
                except ConnectionResetError:  # closed with our bytes unread
                    data = b""
                assert data == b""  # closed: nothing reached the server
        finally:
            relay.close()
        assert any("CERTIFICATE_VERIFY_FAILED" in e for e in relay.errors)


# --------------------------------------------------------------------------
# sipsak


def test_sipsak_options_to_baresip() -> None:
    require_tool("sipsak")
    with Baresip("sip:bob@example.test", name="bob") as bob:
        done = run_sipsak(["-vv", "-s", bob.direct_uri], timeout=15)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "200 OK" in done.stdout


# --------------------------------------------------------------------------
# baresip peer to peer


@pytest.fixture
def bob() -> Iterator[Baresip]:
    with Baresip("sip:bob@example.test", name="bob") as ua:
        yield ua


def test_baresip_starts_headless_with_a_temp_config(bob: Baresip) -> None:
    assert bob.running()
    assert bob.config_dir is not None
    assert "ctrl_tcp_listen" in (bob.config_dir / "config").read_text()
    assert bob.sip_udp_port > 0
    assert "sip:bob@example.test" in bob.command("reginfo")


def test_baresip_messages_peer_to_peer(bob: Baresip) -> None:
    with Baresip("sip:alice@example.test", contacts=[bob.direct_uri], name="alice") as alice:
        alice.send_message(bob.direct_uri, "hello bob, ünïcode ok")
        received = bob.wait_message_from(timeout=10)
        assert received.text == "hello bob, ünïcode ok"
        assert received.peer == "sip:alice@example.test"


def test_sipp_message_body_reaches_baresip_verbatim(bob: Baresip) -> None:
    # message_auth.xml needs a challenge, so send a plain MESSAGE copy.
    scenario = Path(peers.SCENARIOS / "message_auth.xml").read_text()
    head, _, _ = scenario.partition('  <recv response="100" optional="true"/>')
    plain = head + '  <recv response="200"/>\n</scenario>\n'
    with_path = Path(bob.config_dir or ".") / "plain_message.xml"
    with_path.write_text(plain)
    run_sipp(
        with_path, f"127.0.0.1:{bob.sip_udp_port}", service="carol", extra_keys={"text": "one line"}
    ).check()
    assert bob.wait_message(timeout=10) == "one line"


def test_uas_message_takes_a_message_from_baresip() -> None:
    bob = SippUAS("uas_message", service="bob", timeout=20).start()
    with bob, Baresip("sip:alice@example.test", contacts=[bob.uri()], name="alice") as alice:
        alice.send_message(bob.uri(), "to a sipp recipient")
        result = bob.wait(timeout=15).check()
    assert result.received_requests() == ["MESSAGE"]
    assert "to a sipp recipient" in result.messages


def test_baresip_calls_peer_to_peer(bob: Baresip) -> None:
    with Baresip("sip:alice@example.test", name="alice") as alice:
        alice.dial(bob.direct_uri)
        incoming = bob.wait_call_incoming(timeout=10)
        assert incoming["peeruri"] == "sip:alice@example.test"
        alice.wait_call_ringing(timeout=10)
        bob.accept()
        alice.wait_call_established(timeout=10)
        bob.wait_call_established(timeout=10)
        alice.hangup()
        alice.wait_call_closed(timeout=10)
        closed = bob.wait_call_closed(timeout=10)
        assert closed["peeruri"] == "sip:alice@example.test"


def test_baresip_answers_a_sipp_call(bob: Baresip) -> None:
    bob.command("answermode", "auto")
    result = run_sipp(
        "uac_call", f"127.0.0.1:{bob.sip_udp_port}", service="carol", call_duration_ms=300
    ).check()
    assert 200 in result.received_codes()
    bob.wait_call_established(timeout=10)
    bob.wait_call_closed(timeout=10)


def test_baresip_presence_peer_to_peer(bob: Baresip) -> None:
    uri = bob.direct_uri
    with Baresip("sip:alice@example.test", presence_contacts=[uri], name="alice") as alice:
        # bob's own status starts unknown ("<basic>?</basic>"); once he sets
        # one, alice sees it in the first NOTIFY or in a later one.
        bob.set_presence("online")
        alice.wait_presence(uri, "online", timeout=15)
        bob.set_presence("offline")
        alice.wait_presence(uri, "offline", timeout=10)
        back = "offline"
        assert alice.presence_of(uri).lower() == back


# --------------------------------------------------------------------------
# baresip TLS registration through an outbound proxy with a private CA


class TlsRegistrar:
    """A one-connection TLS registrar: 401 challenge, real MD5 digest check.

    Just enough server to prove the baresip account lines; it answers
    REGISTER only (200 with the Contact, or 403 on a wrong digest).
    """

    REALM = "example.test"

    def __init__(self, cert: Path, key: Path, password: str) -> None:
        self.password = password
        self.requests: list[str] = []
        self.tls_version = ""
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(15)
        self.port = self.listener.getsockname()[1]
        self.registered = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._conn: ssl.SSLSocket | None = None

    def __enter__(self) -> TlsRegistrar:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        if self._conn is not None:
            self._conn.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            raw, _ = self.listener.accept()
            conn = self.context.wrap_socket(raw, server_side=True)
        except OSError:
            return
        self._conn = conn
        self.tls_version = conn.version() or ""
        buf = b""
        nonce = 0
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            request = head.decode()
            length = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)", request)
            buf = buf[int(length.group(1)) if length else 0 :]
            self.requests.append(request)
            auth = re.search(r"(?im)^authorization\s*:\s*digest\s+(.*)$", request)
            if auth is None:
                nonce += 1
                challenge = (
                    f'WWW-Authenticate: Digest realm="{self.REALM}", nonce="n{nonce}", '
                    f'algorithm=MD5, qop="auth"\r\n'
                )
                conn.sendall(self._response(request, "401 Unauthorized", challenge))
            elif digest_ok(request, self.password):
                contact = re.search(r"(?im)^(?:contact|m)\s*:\s*(.*)$", request)
                extra = f"Contact: {contact.group(1)}\r\n" if contact else ""
                self.registered.set()  # before the 200: the test may look at once
                conn.sendall(self._response(request, "200 OK", extra))
            else:
                conn.sendall(self._response(request, "403 Forbidden"))

    @staticmethod
    def _response(request: str, status: str, extra: str = "") -> bytes:
        keep = [
            line
            for line in request.split("\r\n")[1:]
            if re.match(r"(?i)(via|from|call-id|cseq)\s*:", line)
        ]
        to = re.search(r"(?im)^to\s*:.*$", request)
        to_line = to.group(0) if to else "To: <sip:unknown@example.test>"
        if "tag=" not in to_line:
            to_line += ";tag=reg1"
        lines = [f"SIP/2.0 {status}", *keep, to_line]
        return ("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()


def _tls_account(registrar: TlsRegistrar, ca: Path, password: str) -> Baresip:
    return Baresip(
        "sip:alice@example.test",
        password=password,
        outbound=f"sip:127.0.0.1:{registrar.port}",
        transport="tls",
        ca_file=ca,
        name="alice-tls",
    )


def test_baresip_registers_over_tls_through_outbound_proxy(pki: Pki) -> None:
    with TlsRegistrar(pki.cert, pki.key, PASSWORD) as registrar:
        alice = _tls_account(registrar, pki.ca, PASSWORD)
        assert alice.account_line() == (
            f'<sip:alice@example.test>;auth_pass={PASSWORD};outbound="sip:127.0.0.1:'
            f'{registrar.port};transport=tls";regint=600;answermode=manual;pubint=0'
        )
        with alice:
            alice.wait_registered(timeout=15)
            assert registrar.registered.is_set()
        first, second = registrar.requests[:2]
        assert first.startswith("REGISTER sip:example.test SIP/2.0")
        assert "Via: SIP/2.0/TLS 127.0.0.1:" in first
        assert f"Route: <sip:127.0.0.1:{registrar.port};transport=tls;lr>" in first
        assert re.search(
            r'(?m)^Authorization: Digest username="alice".*uri="sip:example.test"', second
        )
        assert registrar.tls_version.startswith("TLSv1.")


def test_baresip_reports_a_refused_registration(pki: Pki) -> None:
    with (
        TlsRegistrar(pki.cert, pki.key, PASSWORD) as registrar,
        _tls_account(registrar, pki.ca, "wrong") as alice,
    ):
        failed = alice.wait_register_failed(timeout=15)
        assert "403" in str(failed.get("param"))


def test_baresip_does_not_verify_the_server_certificate(pki: Pki) -> None:
    """Documents a baresip 1.0 / libre 1.1 limitation (docs/testing-peers.md).

    sip_cafile is loaded but the peer certificate is not checked: baresip
    registers to a server whose certificate comes from another CA.  Tests of
    certificate rejection must use a Python ssl client or TlsRelay instead.
    If this starts failing, baresip began verifying: update the docs.
    """
    with (
        TlsRegistrar(pki.other_cert, pki.other_key, PASSWORD) as registrar,
        _tls_account(registrar, pki.ca, PASSWORD) as alice,
    ):
        alice.wait_registered(timeout=15)
