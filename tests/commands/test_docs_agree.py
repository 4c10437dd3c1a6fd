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
