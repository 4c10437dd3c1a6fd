"""`conclave certs …`: effects, output, and a one-line error for every bad input."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from conclave.cli import main
from conclave.pki import create_ca, describe, load_ca, load_certificate
from conclave.pki.crl import load_crl, revoked_serials

PASSWORD = "Wonder-Land-123456"


def conclave(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("conclave: error: "), lines[0]
    return lines[0].removeprefix("conclave: error: ")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("template") / "data"
    assert conclave("init", "--domain", "example.test", "--dir", str(d)).exit_code == 0
    added = conclave("user", "add", "alice", "--dir", str(d), "--password-stdin", stdin=PASSWORD)
    assert added.exit_code == 0, added.output
    return d


def serial_of(path: Path) -> str:
    return f"{load_certificate(path).serial_number:X}"


# -- ca init ---------------------------------------------------------------------------


def test_ca_init_rsa_with_passphrase(tmp_path: Path) -> None:
    d = tmp_path / "fresh"
    result = conclave(
        "certs", "ca", "init", "--dir", str(d), "--key-type", "rsa", "--passphrase-stdin",
        stdin="correct horse battery\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SHA-256 fingerprint: " in result.output
    key = d / "ca" / "ca.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"ENCRYPTED" in key.read_bytes()
    ca = load_ca(d / "ca", b"correct horse battery")
    assert describe(ca.certificate).key_type == "rsa"
    assert ca.private_key.key_size == 3072  # type: ignore[union-attr]
    assert (d / "ca" / "crl.pem").is_file() and (d / "ca" / "index.json").is_file()


def test_ca_init_ec_default_and_refuses_to_overwrite(data: Path) -> None:
    assert "a CA already exists" in one_line_error(
        conclave("certs", "ca", "init", "--dir", str(data))
    )
    old = load_certificate(data / "ca" / "ca.crt")
    result = conclave("certs", "ca", "init", "--dir", str(data), "--replace")
    assert result.exit_code == 0, result.output
    new = load_certificate(data / "ca" / "ca.crt")
    assert new != old and describe(new).key_type == "ec"
    assert describe(new).subject == "CN=Conclave CA for example.test"
    [retired] = (data / "ca" / "retired").iterdir()
    assert load_certificate(retired / "ca.crt") == old
    # the server certificate now chains to nothing we trust; `issue` fixes that
    problems = conclave("certs", "check", "--dir", str(data))
    assert problems.exit_code == 1 and "does not chain to a trusted root" in problems.stdout
    assert conclave("certs", "issue", "--dir", str(data)).exit_code == 0
    assert conclave("certs", "check", "--dir", str(data)).exit_code == 0


def test_ca_init_bad_inputs(tmp_path: Path) -> None:
    err = one_line_error(
        conclave("certs", "ca", "init", "--dir", str(tmp_path), "--key-type", "dsa")
    )
    assert err == "--key-type: unknown key type 'dsa'; use ec or rsa"
    err = one_line_error(
        conclave("certs", "ca", "init", "--dir", str(tmp_path), "--passphrase-stdin", stdin="\n")
    )
    assert err == "empty passphrase on standard input"


# -- issue -----------------------------------------------------------------------------


def test_issue_this_server(data: Path) -> None:
    old = serial_of(data / "tls" / "server.crt")
    result = conclave("certs", "issue", "--dir", str(data), "--name", "pool.example.test")
    assert result.exit_code == 0, result.output
    assert (
        "names:       DNS:example.test, DNS:sip.example.test, DNS:pool.example.test, IP:127.0.0.1"
        in result.output
    )
    assert "no server running" in result.output
    assert serial_of(data / "tls" / "server.crt") != old
    index = json.loads((data / "ca" / "index.json").read_text())["certificates"]
    statuses = {item["serial"]: item["status"] for item in index}
    assert statuses[old] == "superseded"


def test_issue_for_another_server_and_a_user(data: Path) -> None:
    result = conclave("certs", "issue", "--dir", str(data), "--host", "fe2.example.test")
    assert result.exit_code == 0, result.output
    fe2 = load_certificate(data / "tls" / "issued" / "fe2.example.test.crt")
    assert describe(fe2).dns_names == ("fe2.example.test", "example.test", "sip.example.test")
    result = conclave("certs", "issue", "--dir", str(data), "--client", "alice", "--days", "30")
    assert result.exit_code == 0, result.output
    alice = load_certificate(data / "tls" / "clients" / "alice.crt")
    assert describe(alice).uris == ("sip:alice@example.test",)
    assert stat.S_IMODE((data / "tls" / "clients" / "alice.key").stat().st_mode) == 0o600


def test_issue_bad_inputs(data: Path, tmp_path: Path) -> None:
    d = str(data)
    err = one_line_error(conclave("certs", "issue", "--dir", d, "--client", "mallory"))
    assert err == "no such user: mallory@example.test (add it with `conclave user add`)"
    err = one_line_error(conclave("certs", "issue", "--dir", d, "--client", "alice", "--host", "x"))
    assert err == "--client cannot be combined with --host, --name or --ip"
    err = one_line_error(conclave("certs", "issue", "--dir", d, "--out-cert", "x.crt"))
    assert err == "give both --out-cert and --out-key, or neither"
    err = one_line_error(conclave("certs", "issue", "--dir", d, "--name", "bad_name!"))
    assert err == "invalid DNS name for a certificate: 'bad_name!'"
    err = one_line_error(conclave("certs", "issue", "--dir", d, "--ip", "300.1.1.1"))
    assert err == "invalid IP address for a certificate: '300.1.1.1'"
    err = one_line_error(conclave("certs", "issue", "--dir", str(tmp_path / "nowhere")))
    assert "is not a Conclave data directory" in err


def test_passphrase_protected_ca(data: Path) -> None:
    ca_dir = data / "ca"
    for name in ("ca.crt", "ca.key", "index.json", "crl.pem"):
        (ca_dir / name).unlink()
    create_ca(ca_dir, common_name="Locked", passphrase=b"open sesame")
    d = str(data)
    err = one_line_error(conclave("certs", "issue", "--dir", d))
    assert (
        err
        == f"key {ca_dir / 'ca.key'} is encrypted: a passphrase is needed (use --passphrase-stdin)"
    )
    err = one_line_error(
        conclave("certs", "issue", "--dir", d, "--passphrase-stdin", stdin="nope\n")
    )
    assert err == f"wrong passphrase for key {ca_dir / 'ca.key'}"
    ok = conclave("certs", "issue", "--dir", d, "--passphrase-stdin", stdin="open sesame\n")
    assert ok.exit_code == 0, ok.output


# -- renew and revoke -------------------------------------------------------------------


def test_renew_server_and_by_serial(data: Path) -> None:
    d = str(data)
    old = serial_of(data / "tls" / "server.crt")
    assert conclave("certs", "renew", "--dir", d).exit_code == 0
    renewed = serial_of(data / "tls" / "server.crt")
    assert renewed != old
    assert conclave("certs", "issue", "--dir", d, "--client", "alice").exit_code == 0
    alice = serial_of(data / "tls" / "clients" / "alice.crt")
    result = conclave("certs", "renew", alice, "--dir", d)
    assert result.exit_code == 0, result.output
    assert serial_of(data / "tls" / "clients" / "alice.crt") != alice
    # the server certificate by serial: its files are known
    assert conclave("certs", "renew", renewed, "--dir", d).exit_code == 0


def test_renew_bad_inputs(data: Path) -> None:
    d = str(data)
    err = one_line_error(conclave("certs", "renew", "ABCDEF", "--dir", d))
    assert err.startswith("no certificate with serial ABCDEF in ")
    err = one_line_error(conclave("certs", "renew", "not-hex", "--dir", d))
    assert err == "not a certificate serial number (hex expected): 'not-hex'"
    server = serial_of(data / "tls" / "server.crt")
    assert conclave("certs", "revoke", server, "--dir", d).exit_code == 0
    err = one_line_error(conclave("certs", "renew", server, "--dir", d))
    assert err == f"certificate {server} is revoked: issue a new one instead"


def test_revoke_publishes_crl(data: Path) -> None:
    d = str(data)
    assert conclave("certs", "issue", "--dir", d, "--client", "alice").exit_code == 0
    alice = serial_of(data / "tls" / "clients" / "alice.crt")
    result = conclave("certs", "revoke", alice, "--dir", d, "--reason", "keyCompromise")
    assert result.exit_code == 0, result.output
    assert f"revoked {alice} (CN=alice@example.test), reason keyCompromise" in result.output
    crl = load_crl(data / "ca" / "crl.pem", load_certificate(data / "ca" / "ca.crt"))
    assert revoked_serials(crl) == {int(alice, 16)}
    entry = crl.get_revoked_certificate_by_serial_number(int(alice, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name == (
        "key_compromise"
    )
    listed = json.loads(conclave("certs", "list", "--dir", d, "--json").stdout)
    assert {row["serial"]: row["status"] for row in listed}[alice] == "revoked"


def test_revoke_bad_inputs(data: Path) -> None:
    d = str(data)
    err = one_line_error(conclave("certs", "revoke", "0A0B0C", "--dir", d))
    assert err.startswith("no certificate with serial 0A0B0C")
    err = one_line_error(conclave("certs", "revoke", "server", "--dir", d, "--reason", "whim"))
    assert err.startswith("--reason: unknown reason 'whim'; use unspecified, keyCompromise")
    assert conclave("certs", "revoke", "server", "--dir", d).exit_code == 0
    err = one_line_error(conclave("certs", "revoke", "server", "--dir", d))
    assert err.endswith("is already revoked")


def test_crl_command(data: Path) -> None:
    result = conclave("certs", "crl", "--dir", str(data))
    assert result.exit_code == 0 and "0 revoked, valid until" in result.output


# -- list, check, export-ca, import ----------------------------------------------------


def test_list_shows_everything(data: Path) -> None:
    d = str(data)
    conclave("certs", "issue", "--dir", d, "--client", "alice")
    text = conclave("certs", "list", "--dir", d).stdout
    assert "CA  ca/ca.crt  [valid]" in text
    assert "server  tls/server.crt  [valid]" in text
    assert "client alice@example.test  tls/clients/alice.crt  [valid]" in text
    assert "names:       DNS:example.test, DNS:sip.example.test, IP:127.0.0.1" in text
    assert "issuer:      CN=Conclave CA for example.test" in text
    assert "fingerprint: SHA256 " in text and "expires:     " in text
    rows = json.loads(conclave("certs", "list", "--dir", d, "--json").stdout)
    server = next(r for r in rows if r["role"] == "server")
    info = describe(load_certificate(data / "tls" / "server.crt"))
    assert server["fingerprint"] == info.sha256_fingerprint
    assert server["not_after"] == info.not_after.isoformat()


def test_check_passes_then_names_the_problem(data: Path) -> None:
    d = str(data)
    ok = conclave("certs", "check", "--dir", d)
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: ")
    result = conclave("certs", "check", "--dir", d, "--days", "400")
    assert result.exit_code == 1
    assert result.stdout.startswith("server certificate tls/server.crt: expires in ")
    assert "within the 400-day threshold" in result.stdout
    assert one_line_error(result) == "1 certificate problem(s) found"
    ca = load_ca(data / "ca")
    ca.issue_server(["example.test"], ["127.0.0.1"]).write(
        data / "tls" / "server.crt", data / "tls" / "server.key"
    )
    result = conclave("certs", "check", "--dir", d)
    assert result.stdout.strip() == (
        "server certificate tls/server.crt: does not cover required name sip.example.test"
    )


def test_export_ca(data: Path, tmp_path: Path) -> None:
    d = str(data)
    result = conclave("certs", "export-ca", str(tmp_path / "ca.pem"), "--dir", d)
    info = describe(load_certificate(data / "ca" / "ca.crt"))
    assert result.exit_code == 0
    assert f"SHA-256 fingerprint: {info.sha256_fingerprint}" in result.stdout
    assert (tmp_path / "ca.pem").read_bytes() == (data / "ca" / "ca.crt").read_bytes()
    assert (
        conclave("certs", "export-ca", str(tmp_path / "ca.der"), "--der", "--dir", d).exit_code == 0
    )
    der = x509.load_der_x509_certificate((tmp_path / "ca.der").read_bytes())
    assert describe(der).sha256_fingerprint == info.sha256_fingerprint
    err = one_line_error(conclave("certs", "export-ca", str(tmp_path / "no" / "x.pem"), "--dir", d))
    assert err == f"cannot write {tmp_path / 'no' / 'x.pem'}: No such file or directory"


def test_import(data: Path, tmp_path: Path) -> None:
    public = create_ca(tmp_path / "public", common_name="Public CA")
    edge = public.issue_server(["edge.example.test"])
    edge.write(tmp_path / "edge.crt", tmp_path / "edge.key")
    d = str(data)
    result = conclave(
        "certs", "import", str(tmp_path / "edge.crt"), str(tmp_path / "edge.key"), "--dir", d
    )
    assert result.exit_code == 0, result.output
    assert (data / "tls" / "imported" / "edge.example.test" / "cert.pem").is_file()
    listing = conclave("certs", "list", "--dir", d).stdout
    assert "imported edge.example.test  tls/imported/edge.example.test/cert.pem" in listing
    other = public.issue_server(["x.test"])
    other.write(tmp_path / "x.crt", tmp_path / "x.key")
    err = one_line_error(
        conclave("certs", "import", str(tmp_path / "edge.crt"), str(tmp_path / "x.key"), "--dir", d)
    )
    assert err == f"key {tmp_path / 'x.key'} does not match certificate {tmp_path / 'edge.crt'}"
    err = one_line_error(
        conclave("certs", "import", str(tmp_path / "nope.crt"), str(tmp_path / "x.key"), "--dir", d)
    )
    assert err == f"certificate not found: {tmp_path / 'nope.crt'}"
    (tmp_path / "junk.key").write_text("junk")
    err = one_line_error(
        conclave(
            "certs", "import", str(tmp_path / "edge.crt"), str(tmp_path / "junk.key"), "--dir", d
        )
    )
    assert err == f"{tmp_path / 'junk.key'} does not contain a readable PEM private key"


# -- reload, as a real process -----------------------------------------------------------


def test_reload_without_a_server(data: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conclave", "certs", "reload", "--dir", str(data)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"conclave: error: no server is running for {data} (no live conclave.pid)"
    ]


def test_reload_ignores_a_stale_pid_file(data: Path) -> None:
    # Our own pid is alive but is not `conclave serve`: it must not get a SIGHUP.
    import os

    (data / "conclave.pid").write_text(f"{os.getpid()}\n")
    err = one_line_error(conclave("certs", "reload", "--dir", str(data)))
    assert err.startswith("no server is running for ")
