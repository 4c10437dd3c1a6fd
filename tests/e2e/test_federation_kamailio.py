"""A partner that is not Conclave, found by discovery: org-k.test's proxy is Kamailio.

Kamailio 5.6 with its ``tls`` module (``verify_certificate`` and
``require_certificate`` on both its server and client profiles) trusts only
org-a's CA. org-a does not list org-k: partner discovery is on, with org-k's
CA as the CA that certifies discovered partners (standing in for the public
roots), so org-a's Edge finds org-k by DNS SRV (dnsmasq) and treats it as a
discovered partner: 20 requests a second, at most 1000 distinct local users,
every throttle logged. A MESSAGE crosses both ways: alice@org-a.test to
kim@org-k.test (Kamailio logs it and answers 200), and sipp's kim@org-k.test,
through Kamailio, to alice; a burst from sipp is throttled.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conclave.pki import load_ca

from .federation_deployment import Federation, KamailioPartner, discovering_federation
from .peers_base import require_tool, stop_process, wait_until
from .peers_sipp import run_sipp
from .test_federation import message, sign_in

__all__ = ["discovering_federation"]

CONFIG = Path(__file__).parent / "kamailio" / "partner.cfg"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
START_TIMEOUT = 20.0


def kamailio_binary() -> str:
    return "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else require_tool("kamailio")


@pytest.fixture(scope="module")
def kamailio(discovering_federation: Federation) -> Iterator[KamailioPartner]:
    federation = discovering_federation
    partner = federation.kamailio
    binary = kamailio_binary()
    run = partner.root / "run"
    run.mkdir(exist_ok=True)
    cert, key = run / "partner.crt", run / "partner.key"
    load_ca(partner.root / "ca").issue_server([f"sip.{partner.domain}"]).write(cert, key)
    org_a_ca = federation.orgs["a"].ca
    tls = run / "tls.cfg"
    profile = (
        "method = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n"
        f"certificate = {cert}\nprivate_key = {key}\nca_list = {org_a_ca}\n"
    )
    tls.write_text(f"[server:default]\n{profile}\n[client:default]\n{profile}")
    a = federation.orgs["a"]
    values = {
        "@HOST@": partner.host, "@DOMAIN@": partner.domain, "@UDP_PORT@": str(partner.udp_port),
        "@TLS_PORT@": str(partner.tls_port), "@MODULES@": MODULES, "@TLS_CFG@": str(tls),
        "@PEER_DOMAIN@": a.domain, "@PEER_HOST@": f"{a.net}.2",
        "@PEER_PORT@": str(a.federation_port),
    }  # fmt: skip
    text = CONFIG.read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    cfg = run / "kamailio.cfg"
    cfg.write_text(text)
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-3000:]
    log = run / "kamailio.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-DD", "-E", "-f", str(cfg), "-P", str(run / "kamailio.pid"),
             "-Y", str(run), "-m", "64", "-M", "8"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(
            lambda: "TLS" in log.read_text(errors="replace") or proc.poll() is not None,
            START_TIMEOUT, "kamailio to start",
        )  # fmt: skip
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        wait_until(lambda: _listening(partner.host, partner.tls_port), START_TIMEOUT, "its port")
        yield partner
    finally:
        stop_process(proc)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def partner_log(partner: KamailioPartner) -> str:
    return (partner.root / "run" / "kamailio.log").read_text(errors="replace")


def test_message_to_the_kamailio_partner(
    discovering_federation: Federation, kamailio: KamailioPartner
) -> None:
    alice = sign_in(discovering_federation.orgs["a"], "alice")
    assert message(alice, "alice", f"sip:kim@{kamailio.domain}", b"hello kamailio") is None
    answer = alice.final()
    assert answer.status == 200, answer
    line = next(x for x in partner_log(kamailio).splitlines() if "PARTNER-RECEIVED" in x)
    assert "method=MESSAGE" in line and "from=sip:alice@org-a.test" in line
    assert "proto=tls" in line and "body=hello kamailio" in line


def sipp_message(path: Path, to: str, *, answers: str, method: str = "MESSAGE") -> Path:
    """A sipp scenario: one request from kim@org-k.test to ``to``, expecting ``answers``."""
    event = "Event: presence\nExpires: 600\n" if method == "SUBSCRIBE" else ""
    path.write_text(
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<scenario name="partner request">\n'
        '  <send retrans="500"><![CDATA[\n'
        f"{method} {to} SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        "From: <sip:kim@org-k.test>;tag=[call_number]\n"
        f"To: <{to}>\n"
        "Call-ID: [call_id]\n"
        f"CSeq: 1 {method}\n"
        "Max-Forwards: 70\n"
        f"{event}"
        "Content-Type: text/plain\n"
        "Content-Length: [len]\n\n"
        "hello from kamailio\n"
        "]]></send>\n"
        f"{answers}"
        "</scenario>\n"
    )
    return path


def test_message_from_the_kamailio_partner(
    discovering_federation: Federation, kamailio: KamailioPartner, tmp_path: Path
) -> None:
    alice = sign_in(discovering_federation.orgs["a"], "alice")
    scenario = sipp_message(
        tmp_path / "message.xml", "sip:alice@org-a.test", answers='  <recv response="200"/>\n'
    )
    with ThreadPoolExecutor(1) as pool:  # sipp waits for the 200 while alice answers
        sent = pool.submit(
            run_sipp, scenario, f"{kamailio.host}:{kamailio.udp_port}", transport="u1",
            timeout=20,
        )  # fmt: skip
        incoming = alice.recv_request(timeout=20)
        assert incoming.method == "MESSAGE" and incoming.body.startswith(b"hello from kamailio")
        assert incoming.from_aor == "sip:kim@org-k.test"
        alice.reply(incoming, 200)
        result = sent.result(timeout=40)
    assert result.ok, result


def test_a_discovered_partner_gets_no_presence(
    discovering_federation: Federation, kamailio: KamailioPartner, tmp_path: Path
) -> None:
    """Presence federation is opt-in per partner, and a discovered partner has not opted in."""
    scenario = sipp_message(
        tmp_path / "subscribe.xml", "sip:alice@org-a.test", method="SUBSCRIBE",
        answers='  <recv response="403"/>\n',
    )  # fmt: skip
    result = run_sipp(scenario, f"{kamailio.host}:{kamailio.udp_port}", transport="u1", timeout=20)
    assert result.ok, result


def test_a_discovered_partner_is_throttled(
    discovering_federation: Federation, kamailio: KamailioPartner, tmp_path: Path
) -> None:
    """Past 20 requests a second, a discovered partner gets 503 (which Kamailio passes to
    sipp as 500), and the Edge logs the throttle."""
    # Kamailio, a proxy, passes a 503 on as 500 (RFC 3261 §16.7 step 6).
    answers = (
        '  <recv response="404" optional="true" next="done"/>\n'
        '  <recv response="500"/>\n'
        '  <label id="done"/>\n'
    )
    scenario = sipp_message(tmp_path / "burst.xml", "sip:nobody@org-a.test", answers=answers)
    result = run_sipp(
        scenario, f"{kamailio.host}:{kamailio.udp_port}", transport="u1", calls=60,
        rate=1000, timeout=30,
    )  # fmt: skip
    assert result.ok, result
    edge = discovering_federation.edge("a")
    throttled = edge.wait_for(lambda e: e.get("event") == "partner throttled", 15)
    assert throttled["partner"] == "org-k.test"
