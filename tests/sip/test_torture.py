"""Every RFC 4475 / RFC 5118 torture message, judged as the RFC says."""

from __future__ import annotations

import hashlib

import pytest

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.lint import judge
from conclave.sip.message import Request
from conclave.sip.parser import parse_message

from .torture import EXPECTED, load_cases

CASES = load_cases()


def test_every_corpus_message_has_an_expectation() -> None:
    assert {c.id for c in CASES} == set(EXPECTED)
    assert len(CASES) == 61


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_verdict_matches_rfc(case) -> None:  # type: ignore[no-untyped-def]
    data = case.path.read_bytes()
    verdict = judge(data)
    kind, status = EXPECTED[case.id]
    assert verdict.kind == kind, verdict
    if status is not None:
        assert verdict.status == status, verdict
    # The RFC's own classification: a valid message is never "malformed",
    # an invalid one is never "ok".
    if case.verdict == "valid":
        assert verdict.kind != "malformed", verdict
    else:
        assert verdict.kind != "ok", verdict
    assert verdict.reason or verdict.kind == "ok"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_parse_or_remote_error_only(case) -> None:  # type: ignore[no-untyped-def]
    data = case.path.read_bytes()
    for datagram in (True, False):
        try:
            parse_message(data, datagram=datagram)
        except RemoteProtocolError as exc:
            assert 400 <= exc.status <= 599
            assert exc.reason


@pytest.mark.parametrize(
    "case", [c for c in CASES if EXPECTED[c.id][0] != "malformed"], ids=lambda c: c.id
)
def test_wellformed_messages_roundtrip(case) -> None:  # type: ignore[no-untyped-def]
    msg = parse_message(case.path.read_bytes())
    again = parse_message(msg.serialise())
    assert again == msg


def _load(name: str) -> Request:
    case = next(c for c in CASES if c.id == name)
    msg = parse_message(case.path.read_bytes())
    assert isinstance(msg, Request)
    return msg


def test_corpus_files_are_byte_exact() -> None:
    import csv

    from .torture import CORPUS

    with (CORPUS / "rfc4475" / "MANIFEST.tsv").open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            data = (CORPUS / "rfc4475" / f"{row['name']}.dat").read_bytes()
            assert hashlib.sha256(data).hexdigest() == row["sha256"], row["name"]


def test_the_copy_in_the_repository_is_whole() -> None:
    from .torture import CORPUS

    listed = {}
    for line in (CORPUS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    present = {
        str(p.relative_to(CORPUS))
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    }
    assert present == set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((CORPUS / name).read_bytes()).hexdigest() == digest, name


def test_dblreq_ignores_trailing_octets() -> None:
    msg = _load("rfc4475/dblreq")
    assert msg.method == "REGISTER"
    assert msg.body == b""


def test_mpart01_binary_body_kept_exactly() -> None:
    msg = _load("rfc4475/mpart01")
    assert len(msg.body) == int(msg.headers.get("Content-Length") or -1)
    assert b"\x00" in msg.body


def test_wsinv_folded_and_compact_headers() -> None:
    msg = _load("rfc4475/wsinv")
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("Max-Forwards") == "0068"
    assert len(msg.headers.get_all("Via")) == 3


def test_esc02_method_is_not_register() -> None:
    msg = _load("rfc4475/esc02")
    assert msg.method == "RE%47IST%45R"
    assert "C%6Fntact" in {name for name, _ in msg.headers}


def test_transports_unknown_preserved() -> None:
    from conclave.sip.fields import parse_via

    msg = _load("rfc4475/transports")
    transports = [parse_via(v).transport for v in msg.headers.get_all("Via")]
    assert "UNKNOWN" in transports and "SCTP" in transports
