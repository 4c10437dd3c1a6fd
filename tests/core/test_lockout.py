"""The account lockout on its own: familiar and unfamiliar sources lock apart."""

from __future__ import annotations

import json

import pytest

from conclave.core.lockout import MAX_FAMILIAR_PER_ACCOUNT, Access, AccountLockout

HOME, OFFICE, ATTACKER, OTHER = "198.51.100.7", "10.1.2.3", "203.0.113.9", "203.0.113.77"
T0 = 1_800_000_000.0


def lockout(**kw: object) -> AccountLockout:
    settings: dict[str, object] = {"threshold": 3, "window": 600.0, "duration": 900.0}
    settings.update(kw)
    return AccountLockout(internal_networks=["10.0.0.0/8"], **settings)  # type: ignore[arg-type]


def test_failures_from_outside_lock_only_outside_access() -> None:
    locks = lockout()
    locks.success("alice", HOME, T0)  # alice signed in from home before
    assert locks.access("alice", HOME, T0) is Access.FAMILIAR
    assert locks.access("alice", OFFICE, T0) is Access.FAMILIAR  # an internal network
    assert locks.access("alice", ATTACKER, T0) is Access.UNFAMILIAR
    assert locks.failure("alice", ATTACKER, T0 + 1) is None
    assert locks.failure("alice", OTHER, T0 + 2) is None  # a spray: another address
    locked = locks.failure("alice", ATTACKER, T0 + 3)
    assert locked is not None and locked.access is Access.UNFAMILIAR
    assert locked.until == T0 + 3 + 900 and locked.failures == 3
    # Every unfamiliar address is locked out of alice; home and office are not.
    assert locks.is_locked("alice", ATTACKER, T0 + 4)
    assert locks.is_locked("alice", "192.0.2.200", T0 + 4)
    assert not locks.is_locked("alice", HOME, T0 + 4)
    assert not locks.is_locked("alice", OFFICE, T0 + 4)
    # Other accounts are untouched, and the lock ends.
    assert not locks.is_locked("bob", ATTACKER, T0 + 4)
    assert not locks.is_locked("alice", ATTACKER, T0 + 3 + 900)


def test_attempts_while_locked_are_not_counted_and_the_lock_does_not_grow() -> None:
    locks = lockout()
    for t in range(3):
        locks.failure("alice", ATTACKER, T0 + t)
    for t in range(100):
        assert locks.failure("alice", ATTACKER, T0 + 10 + t) is None
    assert not locks.is_locked("alice", ATTACKER, T0 + 2 + 900)


def test_familiar_failures_lock_familiar_access_apart() -> None:
    locks = lockout()
    locks.success("alice", HOME, T0)
    for t in range(2):
        assert locks.failure("alice", HOME, T0 + t) is None
    locked = locks.failure("alice", OFFICE, T0 + 2)  # familiar too: the same counter
    assert locked is not None and locked.access is Access.FAMILIAR
    assert locks.is_locked("alice", HOME, T0 + 3)
    assert not locks.is_locked("alice", ATTACKER, T0 + 3)


def test_failures_outside_the_window_start_again_and_success_forgives() -> None:
    locks = lockout()
    locks.failure("alice", ATTACKER, T0)
    locks.failure("alice", ATTACKER, T0 + 1)
    assert locks.failure("alice", ATTACKER, T0 + 700) is None  # a new window: 1 failure
    locks.failure("alice", ATTACKER, T0 + 701)
    locks.success("alice", ATTACKER, T0 + 702)  # the right password, not locked yet
    assert locks.access("alice", ATTACKER, T0 + 703) is Access.FAMILIAR
    assert locks.status(T0 + 703, "alice")[0].failures == {}


def test_familiar_addresses_expire_and_are_bounded() -> None:
    locks = lockout(familiar_days=1)
    locks.success("alice", HOME, T0)
    assert locks.access("alice", HOME, T0 + 86_000) is Access.FAMILIAR
    assert locks.access("alice", HOME, T0 + 86_401) is Access.UNFAMILIAR
    for n in range(MAX_FAMILIAR_PER_ACCOUNT + 5):
        locks.success("alice", f"192.0.2.{n}", T0 + n)
    [status] = locks.status(T0 + 100, "alice")
    assert len(status.familiar_sources) == MAX_FAMILIAR_PER_ACCOUNT
    assert "192.0.2.0" not in status.familiar_sources  # the oldest went first


def test_an_ipv6_host_is_its_slash_64() -> None:
    locks = lockout()
    locks.success("alice", "2001:db8:1:2::10", T0)
    assert locks.access("alice", "2001:db8:1:2:aaaa::99", T0) is Access.FAMILIAR
    assert locks.access("alice", "2001:db8:1:3::10", T0) is Access.UNFAMILIAR


def test_names_are_one_account_whatever_their_case() -> None:
    locks = lockout()
    for t in range(3):
        locks.failure("Alice" if t % 2 else "alice", ATTACKER, T0 + t)
    assert locks.is_locked("ALICE", ATTACKER, T0 + 5)


def test_reset_unlocks_and_keeps_familiar_sources() -> None:
    locks = lockout()
    locks.success("alice", HOME, T0)
    for t in range(3):
        locks.failure("alice", ATTACKER, T0 + t)
    assert [s.user for s in locks.locked(T0 + 5)] == ["alice"]
    assert locks.reset("alice", T0 + 5) is True
    assert not locks.is_locked("alice", ATTACKER, T0 + 6)
    assert locks.access("alice", HOME, T0 + 6) is Access.FAMILIAR
    assert locks.reset("alice", T0 + 7) is False
    assert locks.reset("nobody", T0 + 7) is False


def test_the_state_survives_a_restart_through_json() -> None:
    locks = lockout()
    locks.success("alice", HOME, T0)
    for t in range(3):
        locks.failure("alice", ATTACKER, T0 + t)
    saved = json.loads(json.dumps(locks.snapshot(T0 + 10)))
    again = lockout()
    assert again.restore(saved) == 1
    assert again.is_locked("alice", ATTACKER, T0 + 11)
    assert not again.is_locked("alice", HOME, T0 + 11)
    # A damaged file loses the damaged entries, never the process.
    saved["accounts"]["bob"] = {"familiar": "not a mapping"}
    saved["accounts"]["carol"] = 7
    assert lockout().restore(saved) == 1
    assert lockout().restore({"accounts": []}) == 0


def test_tracked_accounts_are_bounded() -> None:
    locks = lockout(max_accounts=10)
    for n in range(25):
        locks.failure(f"user{n}", ATTACKER, T0 + n)
    assert len(locks.status(T0 + 30)) == 10


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AccountLockout(threshold=0)
    with pytest.raises(ValueError):
        AccountLockout(internal_networks=["not a network"])
