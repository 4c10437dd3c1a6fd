"""What the documentation for users tells them agrees with the code."""

from __future__ import annotations

import re
from pathlib import Path

from conclave.config import AuthSection

ROOT = Path(__file__).resolve().parents[2]


def baresip_digest_note() -> str:
    text = (ROOT / "docs" / "testing-peers.md").read_text()
    return next(
        block
        for block in text.split("\n- ")
        if block.startswith("**Digest: MD5 only, and any non-MD5 challenge fails")
    )


def test_baresip_needs_no_md5_setting() -> None:
    """Baresip 1.0 is recognised by its User-Agent and offered MD5 alone by default,
    so the page must not tell its users to restrict the server to MD5."""
    note = baresip_digest_note()
    assert 'algorithms = ["MD5"]' not in note
    listed = tuple(re.findall(r'`"([^"`]+)"`', note))
    assert listed == AuthSection().md5_only_user_agents
    assert "md5_only_user_agents" in note
    assert any("baresip v1.0.0".startswith(prefix) for prefix in listed)


def test_the_demo_prints_what_the_readme_promises(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conclave.config import load_config

    data = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "conclave", "demo", "--dir", str(data), "--tls-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    admin = load_config(data).admin
    assert admin.enabled and admin.bind == "127.0.0.1:9464"
    assert admin.console and admin.admins == ("admin",)
    assert "https://127.0.0.1:9464/metrics" in out
    assert "Admin console: https://127.0.0.1:9464/console (sign in as admin)" in out
    assert "bin/conclave" in out
    assert "pubint=" in out  # baresip publishes presence
    assert "sip.example.test" in out and "maddr=127.0.0.1" in out  # Linphone verifies by name
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "https://127.0.0.1:9464/health" in readme
    assert "https://127.0.0.1:9464/console" in readme
