"""Timer configuration of the transaction layer (RFC 3261 §17, Table 4 of §A).

Only the three base values are configurable; every timer A-M is derived from
them exactly as RFC 3261 Appendix A and RFC 6026 §8.11 say, so the schedule
can never be internally inconsistent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LocalProtocolError


@dataclass(frozen=True)
class TimerConfig:
    """RFC 3261 timer base values, in seconds, and the derived timers.

    The defaults are the RFC defaults. Lower ``T1`` only on networks known to
    have a smaller round-trip time (§17.1.1.1); never lower ``T2`` below
    ``T1``.
    """

    T1: float = 0.5
    """Round-trip time estimate (RFC 3261 §17.1.1.1, default 500 ms). The
    first retransmission interval of Timers A, E and G, and the base of every
    64*T1 transaction timeout (B, F, H, J, L, M)."""

    T2: float = 4.0
    """Maximum retransmission interval for non-INVITE requests and INVITE
    responses (RFC 3261 §17.1.2.2, §17.2.1, default 4 s). Timers E and G
    double up to this cap."""

    T4: float = 5.0
    """Maximum duration a message will remain in the network (RFC 3261
    §17.1.2.2, default 5 s). Timers I and K wait this long on unreliable
    transports to absorb stray retransmissions."""

    trying_delay: float = 0.2
    """How long an INVITE server transaction waits for the TU's first
    response before it sends ``100 Trying`` itself (RFC 3261 §17.2.1: "if the
    TU will not generate a provisional response within 200 ms"). Set it to
    0 to send 100 Trying immediately on receipt of every new INVITE, as most
    proxies do (§16.2 allows a proxy to do so)."""

    def __post_init__(self) -> None:
        if not self.T1 > 0 or not self.T4 > 0:
            raise LocalProtocolError("TimerConfig: T1 and T4 must be positive")
        if not self.T2 >= self.T1:
            raise LocalProtocolError("TimerConfig: T2 must be at least T1")
        if not self.trying_delay >= 0:
            raise LocalProtocolError("TimerConfig: trying_delay must not be negative")

    # -- derived timers (RFC 3261 Appendix A; RFC 6026 §8.11) ----------------
    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.T1

    def timer_d(self, reliable: bool) -> float:
        """Timer D: "> 32 s" for unreliable transports, 0 for reliable (§17.1.1.2).

        It must outlive the server's Timer H window of 64*T1 at the server's
        *default* T1, so it never drops below 32 s even if our T1 is smaller.
        """
        return 0.0 if reliable else max(32.0, self.timeout)

    def timer_i(self, reliable: bool) -> float:
        """Timer I: T4 for unreliable transports, 0 for reliable (§17.2.1)."""
        return 0.0 if reliable else self.T4

    def timer_j(self, reliable: bool) -> float:
        """Timer J: 64*T1 for unreliable transports, 0 for reliable (§17.2.2)."""
        return 0.0 if reliable else self.timeout

    def timer_k(self, reliable: bool) -> float:
        """Timer K: T4 for unreliable transports, 0 for reliable (§17.1.2.2)."""
        return 0.0 if reliable else self.T4
