"""`conclave sip lint` end to end, as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.sip.torture import CORPUS, EXPECTED

CONCLAVE = [sys.executable, "-m", "conclave"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONCLAVE, *args], capture_output=True, text=True, timeout=60, env=os.environ.copy()
    )


def test_whole_corpus_one_line_per_file() -> None:
    files = sorted(CORPUS.glob("rfc*/*.dat"))
    proc = run("sip", "lint", *map(str, files))
    assert proc.returncode == 1  # the corpus has invalid messages
    lines = proc.stdout.splitlines()
    assert len(lines) == len(files) == len(EXPECTED)
    for path, line in zip(files, lines, strict=True):
        key = f"{path.parent.name}/{path.stem}"
        kind, status = EXPECTED[key]
        assert line.startswith(f"{path}: ")
        rest = line[len(f"{path}: ") :]
        if kind == "ok":
            assert rest == "ok"
        elif kind == "malformed":
            assert rest.startswith("malformed: ") and len(rest) > len("malformed: ")
        else:
            assert rest.startswith(f"reject {status}: ")
    assert proc.stderr == ""


def test_exit_zero_when_all_ok() -> None:
    proc = run("sip", "lint", str(CORPUS / "rfc4475" / "wsinv.dat"))
    assert proc.returncode == 0
    assert proc.stdout.strip().endswith(": ok")


def test_json_output() -> None:
    files = [CORPUS / "rfc4475" / n for n in ("wsinv.dat", "badvers.dat", "ncl.dat")]
    proc = run("sip", "lint", "--json", *map(str, files))
    assert proc.returncode == 1
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["verdict"] for o in objs] == ["ok", "reject", "malformed"]
    assert objs[1]["status"] == 505
    assert objs[2]["reason"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("sip", "lint").returncode == 2
    proc = run("sip", "lint", str(tmp_path / "missing.sip"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert run("sip", "lint", "--bogus", "x").returncode == 2


def test_body_without_content_type_is_rejected_400(tmp_path: Path) -> None:
    body = b"hello"
    data = (
        "MESSAGE sip:bob@example.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:bob@example.test>\r\n"
        "From: <sip:alice@example.test>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710\r\n"
        "CSeq: 1 MESSAGE\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    path = tmp_path / "untyped.sip"
    path.write_bytes(data)
    proc = run("sip", "lint", str(path))
    assert proc.returncode == 1
    assert proc.stdout == f"{path}: reject 400: missing Content-Type header for a non-empty body\n"
    typed = tmp_path / "typed.sip"
    typed.write_bytes(
        data.replace(b"CSeq: 1 MESSAGE\r\n", b"CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n")
    )
    assert run("sip", "lint", str(typed)).returncode == 0
