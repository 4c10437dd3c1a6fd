"""SourceGuard: token bucket, bans and their expiry, auth failures, bounded memory."""

from __future__ import annotations

import pytest

from conclave.transport import SourceGuard, Verdict
from conclave.transport.guard import BAN_MEMORY, MAX_BAN_SECONDS, source_key

IP = "127.0.0.1"


def test_burst_then_ban_then_expiry() -> None:
    guard = SourceGuard(rate=10, burst=5, ban_seconds=60)
    now = 1000.0
    assert [guard.allow(IP, now) for _ in range(5)] == [Verdict.ALLOWED] * 5
    assert not guard.is_banned(IP, now)
    assert guard.allow(IP, now) is Verdict.BANNED_NOW
    assert guard.is_banned(IP, now)
    assert guard.banned_until(IP, now) == now + 60
    assert guard.allow(IP, now + 1) is Verdict.BANNED
    assert guard.is_banned(IP, now + 59.9)
    assert not guard.is_banned(IP, now + 60)
    # The bucket is full again after the ban: a whole burst is allowed.
    assert [guard.allow(IP, now + 60) for _ in range(5)] == [Verdict.ALLOWED] * 5


def test_refill_at_rate() -> None:
    guard = SourceGuard(rate=10, burst=2, ban_seconds=60)
    now = 0.0
    for step in range(100):  # exactly the sustained rate: never limited
        assert guard.allow(IP, now + step * 0.1) is Verdict.ALLOWED
    assert guard.allow(IP, now + 9.9) is Verdict.ALLOWED  # the burst's spare token
    assert guard.allow(IP, now + 9.9) is Verdict.BANNED_NOW


def test_limited_before_ban() -> None:
    guard = SourceGuard(rate=1, burst=1, ban_seconds=30, limited_before_ban=2)
    assert guard.allow(IP, 0.0) is Verdict.ALLOWED
    assert guard.allow(IP, 0.1) is Verdict.LIMITED
    assert guard.allow(IP, 0.2) is Verdict.LIMITED
    assert not guard.is_banned(IP, 0.2)
    # Backing off clears the strikes...
    assert guard.allow(IP, 1.5) is Verdict.ALLOWED
    assert guard.allow(IP, 1.6) is Verdict.LIMITED
    assert guard.allow(IP, 1.7) is Verdict.LIMITED
    # ...and persisting gets the source banned.
    assert guard.allow(IP, 1.8) is Verdict.BANNED_NOW
    assert guard.is_banned(IP, 31.7)
    assert not guard.is_banned(IP, 31.8)


def test_sources_are_independent() -> None:
    guard = SourceGuard(rate=1, burst=1, ban_seconds=30)
    guard.allow("192.0.2.1", 0.0)
    assert guard.allow("192.0.2.1", 0.0) is Verdict.BANNED_NOW
    assert guard.allow("192.0.2.2", 0.0) is Verdict.ALLOWED
    assert not guard.is_banned("192.0.2.2", 0.0)


def test_auth_failures_ban_past_the_threshold() -> None:
    guard = SourceGuard(auth_failures_per_minute=3, ban_seconds=120)
    assert [guard.record_auth_failure(IP, 10.0 + i) for i in range(3)] == [False] * 3
    assert guard.record_auth_failure(IP, 13.0) is True
    assert guard.is_banned(IP, 13.0)
    assert guard.allow(IP, 14.0) is Verdict.BANNED
    assert guard.record_auth_failure(IP, 14.0) is False  # already banned
    assert not guard.is_banned(IP, 133.0)


def test_auth_failures_spread_out_are_tolerated() -> None:
    guard = SourceGuard(auth_failures_per_minute=3)
    # One failure every 20 s is exactly 3 a minute: never over the limit.
    assert not any(guard.record_auth_failure(IP, i * 20.0) for i in range(50))


def test_exempt_and_loopback() -> None:
    guard = SourceGuard(rate=1, burst=1, exempt=["192.0.2.50", "2001:DB8::1"])
    for _ in range(10):
        assert guard.allow("192.0.2.50", 0.0) is Verdict.ALLOWED
        assert guard.record_auth_failure("2001:db8::1", 0.0) is False
    guard.ban("192.0.2.50", 0.0)
    assert not guard.is_banned("192.0.2.50", 0.0)
    assert len(guard) == 0
    # Loopback is an ordinary source.
    guard.allow(IP, 0.0)
    assert guard.allow(IP, 0.0) is Verdict.BANNED_NOW


def test_explicit_ban_and_unban() -> None:
    guard = SourceGuard(ban_seconds=60)
    guard.ban(IP, 0.0, seconds=5)
    assert guard.is_banned(IP, 4.9)
    assert not guard.is_banned(IP, 5.0)
    guard.ban(IP, 10.0)
    guard.unban(IP)
    assert not guard.is_banned(IP, 10.0)


def guess_until_banned(guard: SourceGuard, now: float, ip: str = IP) -> float:
    """Failed authentications from ``ip`` at ``now`` until one bans it; the ban's end."""
    while not guard.record_auth_failure(ip, now):
        pass
    until = guard.banned_until(ip, now)
    assert until is not None
    return until


def test_each_repeat_ban_lasts_twice_the_last_up_to_the_cap() -> None:
    guard = SourceGuard(auth_failures_per_minute=3, ban_seconds=60, max_ban_seconds=300)
    now, lengths = 0.0, []
    for _ in range(5):
        until = guess_until_banned(guard, now)
        lengths.append(until - now)
        assert guard.ban_length(IP) == until - now
        now = until  # the guesser waits the ban out, then starts again
    assert lengths == [60, 120, 240, 300, 300]


def test_rate_bans_and_auth_bans_escalate_together() -> None:
    # One mechanism: a flood ban followed by a guessing ban is a repeat.
    guard = SourceGuard(rate=1, burst=1, ban_seconds=10, auth_failures_per_minute=1)
    guard.allow(IP, 0.0)
    assert guard.allow(IP, 0.0) is Verdict.BANNED_NOW
    assert guess_until_banned(guard, 10.0) == 10.0 + 20


def test_a_source_clean_for_the_memory_starts_over() -> None:
    guard = SourceGuard(auth_failures_per_minute=1, ban_seconds=60)
    first_end = guess_until_banned(guard, 0.0)
    second_end = guess_until_banned(guard, first_end + BAN_MEMORY)  # just within: a repeat
    assert second_end - (first_end + BAN_MEMORY) == 120
    later = second_end + BAN_MEMORY + 1  # clean for longer than the memory
    assert guess_until_banned(guard, later) - later == 60


def test_the_default_cap_is_a_day() -> None:
    guard = SourceGuard(auth_failures_per_minute=1, ban_seconds=600)
    assert guard.max_ban_seconds == MAX_BAN_SECONDS == 86_400
    now = 0.0
    for _ in range(12):
        now = guess_until_banned(guard, now)
    assert guard.ban_length(IP) == 86_400
    # A cap below the first ban's length is raised to it: escalation never shortens a ban.
    assert SourceGuard(ban_seconds=600, max_ban_seconds=60).max_ban_seconds == 600


def test_ended_bans_are_reported_once() -> None:
    guard = SourceGuard(rate=1, burst=1, ban_seconds=10)
    for ip in ("192.0.2.1", "192.0.2.2"):
        guard.allow(ip, 0.0)
        guard.allow(ip, 0.0)
    guard.ban("2001:db8::1", 5.0, seconds=30)
    assert guard.ended_bans(9.9) == []
    assert sorted(guard.ended_bans(10.0)) == ["192.0.2.1", "192.0.2.2"]
    assert guard.ended_bans(20.0) == []
    assert guard.ended_bans(35.0) == ["2001:db8::/64"]
    # An unban is the operator's: nothing is left to report.
    guard.ban(IP, 40.0)
    guard.unban(IP)
    assert guard.ended_bans(1e9) == []


def test_a_repeat_offender_is_not_forgotten_first() -> None:
    # With the table full, a source whose ban ended recently still carries its
    # repeat count: a decayed stranger makes room instead.
    guard = SourceGuard(rate=1, burst=1, ban_seconds=10, max_tracked=2)
    guard.allow("192.0.2.1", 0.0)
    guard.allow("192.0.2.1", 0.0)  # banned until 10
    guard.allow("192.0.2.2", 11.0)  # refills by 100
    guard.allow("192.0.2.3", 100.0)  # table full: 192.0.2.2 goes, not the offender
    guard.allow("192.0.2.1", 100.0)
    assert guard.allow("192.0.2.1", 100.0) is Verdict.BANNED_NOW
    assert guard.banned_until("192.0.2.1", 100.0) == 120.0


def test_is_banned_does_not_track() -> None:
    guard = SourceGuard()
    assert not guard.is_banned(IP, 0.0)
    assert len(guard) == 0


def test_memory_is_bounded_and_decayed_entries_go_first() -> None:
    guard = SourceGuard(rate=1, burst=2, ban_seconds=1000, max_tracked=3)
    guard.allow("192.0.2.1", 0.0)
    guard.allow("192.0.2.1", 0.0)
    guard.allow("192.0.2.1", 0.0)  # banned, and the least recently seen
    guard.allow("192.0.2.2", 0.0)  # will have refilled: nothing to remember
    guard.allow("192.0.2.3", 9.0)
    guard.allow("192.0.2.3", 9.0)  # bucket empty
    assert guard.allow("192.0.2.4", 10.0) is Verdict.ALLOWED
    assert len(guard) == 3
    assert guard.is_banned("192.0.2.1", 10.0)  # kept, although oldest
    # With nothing decayed, the least recently seen goes.
    guard.allow("192.0.2.5", 10.0)
    assert len(guard) == 3
    assert not guard.is_banned("192.0.2.1", 10.0)


def test_many_sources_stay_bounded() -> None:
    guard = SourceGuard(max_tracked=100)
    for i in range(5000):
        guard.allow(f"10.0.{i // 256}.{i % 256}", i * 0.001)
    assert len(guard) == 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0},
        {"burst": 0},
        {"ban_seconds": 0},
        {"auth_failures_per_minute": 0},
        {"limited_before_ban": -1},
        {"max_tracked": 0},
    ],
)
def test_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SourceGuard(**kwargs)  # type: ignore[arg-type]


def test_bad_exempt_address() -> None:
    with pytest.raises(ValueError):
        SourceGuard(exempt=["not-an-ip"])


# IPv6 sources are tracked per /64, IPv4-mapped IPv6 as the IPv4 address (issue 12, item 16).


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:a:b:c:d", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64%eth0"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("not-an-ip:", "not-an-ip:"),
    ],
)
def test_source_key(ip: str, key: str) -> None:
    assert source_key(ip) == key


def test_ipv6_ban_covers_the_whole_64() -> None:
    guard = SourceGuard(rate=1, burst=2, ban_seconds=60)
    # Rotating addresses inside one /64 does not buy a fresh bucket.
    assert guard.allow("2001:db8:0:1::1", 0.0) is Verdict.ALLOWED
    assert guard.allow("2001:db8:0:1::2", 0.0) is Verdict.ALLOWED
    assert guard.allow("2001:db8:0:1:ffff:ffff:ffff:ffff", 0.0) is Verdict.BANNED_NOW
    for other in ("2001:db8:0:1::1", "2001:db8:0:1::abcd", "2001:db8:0:1:1:2:3:4"):
        assert guard.is_banned(other, 1.0)
        assert guard.allow(other, 1.0) is Verdict.BANNED
        assert guard.banned_until(other, 1.0) == 60.0
    # The neighbouring /64 is another source.
    assert not guard.is_banned("2001:db8:0:2::1", 1.0)
    assert guard.allow("2001:db8:0:2::1", 1.0) is Verdict.ALLOWED
    assert len(guard) == 2
    guard.unban("2001:db8:0:1::99")
    assert not guard.is_banned("2001:db8:0:1::1", 1.0)


def test_ipv6_auth_failures_count_per_64() -> None:
    guard = SourceGuard(auth_failures_per_minute=3, ban_seconds=120)
    hosts = [f"2001:db8:5:6::{n:x}" for n in range(1, 5)]
    assert [guard.record_auth_failure(h, 10.0) for h in hosts[:3]] == [False] * 3
    assert guard.record_auth_failure(hosts[3], 10.0) is True
    assert guard.is_banned("2001:db8:5:6:dead:beef::1", 11.0)
    assert not guard.is_banned("2001:db8:5:7::1", 11.0)


def test_explicit_ipv6_ban_is_per_64() -> None:
    guard = SourceGuard(ban_seconds=60)
    guard.ban("2001:db8:9:9::1", 0.0)
    assert guard.is_banned("2001:db8:9:9::2", 0.0)
    assert not guard.is_banned("2001:db8:9:a::1", 0.0)


def test_ipv4_is_per_address_and_ipv4_mapped_is_ipv4() -> None:
    guard = SourceGuard(rate=1, burst=1, ban_seconds=60)
    guard.allow("192.0.2.1", 0.0)
    assert guard.allow("::ffff:192.0.2.1", 0.0) is Verdict.BANNED_NOW
    assert guard.is_banned("192.0.2.1", 0.0)
    assert guard.is_banned("::ffff:192.0.2.1", 0.0)
    # IPv4 neighbours, even in the same /24, are other sources.
    assert not guard.is_banned("192.0.2.2", 0.0)
    assert not guard.is_banned("::ffff:192.0.2.2", 0.0)
    assert len(guard) == 1


def test_exempt_address_inside_a_banned_64() -> None:
    guard = SourceGuard(rate=1, burst=1, exempt=["2001:db8::1", "192.0.2.50"])
    guard.allow("2001:db8::2", 0.0)
    assert guard.allow("2001:db8::3", 0.0) is Verdict.BANNED_NOW
    assert guard.is_banned("2001:db8::4", 0.0)
    # The exempt address is exact: its neighbours are banned, it is not.
    assert not guard.is_banned("2001:db8::1", 0.0)
    assert guard.banned_until("2001:db8::1", 0.0) is None
    assert guard.allow("2001:db8::1", 0.0) is Verdict.ALLOWED
    # An exempt IPv4 address is exempt in its IPv4-mapped form too.
    for _ in range(5):
        assert guard.allow("::ffff:192.0.2.50", 0.0) is Verdict.ALLOWED


def test_a_spoofed_flood_inside_one_64_takes_one_entry() -> None:
    guard = SourceGuard(rate=1000, burst=100_000, max_tracked=10)
    for n in range(1000):
        guard.allow(f"2001:db8:7:7:{n:x}::1", 0.0)
    assert len(guard) == 1
