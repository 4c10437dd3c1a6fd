"""``conclave lockout`` with no server running: it reads and edits the saved state.

(With a server running, tests/security/test_lockout.py drives the same commands.)
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

from conclave.core.lockout import AccountLockout
from conclave.ops.lockout import STATE_FILE, save_state

from .processes import ok, run


def init(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    ok("init", "--domain", "example.test", "--dir", str(data))
    return data


def locked_state(data: Path, user: str) -> None:
    lockout = AccountLockout(threshold=2)
    now = time.time()
    lockout.success(user, "192.0.2.10", now)
    for _ in range(2):
        lockout.failure(user, "203.0.113.5", now)
    save_state(data, lockout.snapshot(now))


def test_status_before_anything_happened(tmp_path: Path) -> None:
    data = init(tmp_path)
    assert "no lockout state saved yet" in ok("lockout", "status", "--dir", str(data))
    assert json.loads(ok("lockout", "status", "--dir", str(data), "--json")) == []


def test_status_and_reset_of_a_saved_lock(tmp_path: Path) -> None:
    data = init(tmp_path)
    locked_state(data, "alice")
    out = ok("lockout", "status", "--dir", str(data))
    assert out.startswith("alice: unfamiliar access locked until ")
    assert "familiar: 192.0.2.10" in out
    assert ok("lockout", "reset", "alice", "--dir", str(data)).strip() == "alice: unlocked"
    assert stat.S_IMODE((data / STATE_FILE).stat().st_mode) == 0o600
    [entry] = json.loads(ok("lockout", "status", "alice", "--dir", str(data), "--json"))
    assert entry["locked_until"] == {} and entry["familiar_sources"] == ["192.0.2.10"]
    assert ok("lockout", "reset", "alice", "--dir", str(data)).strip() == "alice: was not locked"


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    data = init(tmp_path)
    (data / STATE_FILE).write_text("{not json")
    broken = run("lockout", "status", "--dir", str(data))
    assert broken.returncode != 0
    assert len(broken.stderr.strip().splitlines()) == 1 and "lockout.json" in broken.stderr
    missing = run("lockout", "reset", "--dir", str(data))
    assert missing.returncode != 0 and "USER" in missing.stderr
    nowhere = run("lockout", "status", "--dir", str(tmp_path / "none"))
    assert nowhere.returncode != 0 and len(nowhere.stderr.strip().splitlines()) == 1
