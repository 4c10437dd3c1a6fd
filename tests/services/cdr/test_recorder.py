"""CdrRecorder: router events become CDRs, written in batches off the message path."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable

import pytest

from conclave.services.cdr import CdrRecorder
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.message import Request, make_response
from conclave.sip.uri import parse_uri
from conclave.store.cdr import Cdr

DEADLINE = 10.0
FLOW = Flow("tls", ("192.0.2.7", 50600), ("127.0.0.1", 5061))


class Clock:
    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    """Collects batches; can be told to fail, and signals each batch."""

    def __init__(self) -> None:
        self.rows: list[Cdr] = []
        self.batches = 0
        self.fail = False
        self.purged_before: dt.datetime | None = None
        self.wrote = asyncio.Event()

    async def insert_many(self, records: Iterable[Cdr]) -> int:
        if self.fail:
            raise OSError("database is down")
        batch = list(records)
        self.rows.extend(batch)
        self.batches += 1
        self.wrote.set()
        return len(batch)

    async def purge_older_than(self, cutoff: dt.datetime) -> int:
        self.purged_before = cutoff
        return 0


def request(method: str, *, caller: str = "alice", callee: str = "bob", call_id: str = "c1",
            headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> Request:  # fmt: skip
    return Request(
        method,
        parse_uri(f"sip:{callee}@example.test"),
        Headers(
            [
                ("Via", "SIP/2.0/TLS 192.0.2.7:50600;branch=z9hG4bKx"),
                ("From", f"<sip:{caller}@example.test>;tag=a"),
                ("To", f"<sip:{callee}@example.test>"),
                ("Call-ID", call_id),
                ("CSeq", f"1 {method}"),
                *headers,
            ]
        ),
        body,
    )


def recorder(**kw: object) -> tuple[CdrRecorder, Sink, Clock]:
    sink, clock = Sink(), Clock()
    return CdrRecorder(sink, clock=clock, **kw), sink, clock  # type: ignore[arg-type]


def flush(rec: CdrRecorder) -> None:
    asyncio.run(rec.flush())


def test_message_outcome() -> None:
    rec, sink, clock = recorder()
    done = rec.outcome(request("MESSAGE", headers=[("Content-Type", "text/plain")], body=b"hi"))
    assert done is not None
    clock.now += 0.25
    done(200)
    done(200)  # a second final (another fork's 2xx) is not a second record
    flush(rec)
    (row,) = sink.rows
    assert (row.kind, row.caller, row.callee, row.status) == (
        "im",
        "sip:alice@example.test",
        "sip:bob@example.test",
        200,
    )
    assert row.reason == "delivered" and row.duration == pytest.approx(0.25)
    assert row.detail == {"content_type": "text/plain", "bytes": 2, "mode": "pager"}


@pytest.mark.parametrize(
    ("status", "reason"),
    [(202, "stored for offline recipient"), (404, "no such user"), (503, "service unavailable")],
)
def test_message_failures_and_offline(status: int, reason: str) -> None:
    rec, sink, _ = recorder()
    done = rec.outcome(request("MESSAGE"), in_dialog=True)
    assert done is not None
    done(status)
    flush(rec)
    assert (sink.rows[0].status, sink.rows[0].reason) == (status, reason)
    assert sink.rows[0].detail["mode"] == "session"


def test_answered_call_is_recorded_at_bye() -> None:
    rec, sink, clock = recorder()
    done = rec.outcome(request("INVITE"))
    assert done is not None
    clock.now += 2
    done(200)
    assert rec.open_calls() == 1 and rec.pending() == 0
    clock.now += 60
    rec.call_ended(request("BYE", caller="bob", callee="alice"))
    rec.call_ended(request("BYE"))  # a second BYE: nothing more
    flush(rec)
    (row,) = sink.rows
    assert (row.kind, row.status, row.reason) == ("call", 200, "completed")
    assert row.duration == pytest.approx(60.0)
    assert row.answered_at is not None and row.ended_at is not None
    assert (row.answered_at - row.started_at).total_seconds() == pytest.approx(2.0)
    assert row.detail == {"setup_seconds": 2.0, "ended_by": "callee"}


@pytest.mark.parametrize(
    ("status", "reason"), [(487, "cancelled"), (486, "busy"), (480, "unavailable")]
)
def test_failed_call(status: int, reason: str) -> None:
    rec, sink, _ = recorder()
    done = rec.outcome(request("INVITE"))
    assert done is not None
    done(status)
    flush(rec)
    assert (sink.rows[0].status, sink.rows[0].reason, sink.rows[0].duration) == (
        status,
        reason,
        0.0,
    )
    assert rec.open_calls() == 0


def test_reinvite_and_other_methods_get_no_callback() -> None:
    rec, _, _ = recorder()
    assert rec.outcome(request("INVITE"), in_dialog=True) is None
    assert rec.outcome(request("OPTIONS")) is None


def test_registration() -> None:
    rec, sink, _ = recorder()
    reg = request(
        "REGISTER",
        callee="alice",
        headers=[("Contact", "<sip:alice@192.0.2.7:50600>"), ("Expires", "600"),
                 ("User-Agent", "test/1")],
    )  # fmt: skip
    rec.registered("sip:alice@example.test", reg, make_response(reg, 200), FLOW)
    unreg = request("REGISTER", callee="alice", headers=[("Contact", "*"), ("Expires", "0")])
    rec.registered("sip:alice@example.test", unreg, make_response(unreg, 200), FLOW)
    bad = request("REGISTER", callee="alice")
    rec.registered(
        "sip:alice@example.test", bad, make_response(bad, 423, "Interval Too Brief"), FLOW
    )
    flush(rec)
    assert [(r.kind, r.status, r.reason) for r in sink.rows] == [
        ("register", 200, "registered"),
        ("register", 200, "unregistered"),
        ("register", 423, "Interval Too Brief"),
    ]
    assert sink.rows[0].detail["source"] == "192.0.2.7:50600"
    assert sink.rows[0].detail["user_agent"] == "test/1"
    assert sink.rows[0].callee is None


def test_registrations_can_be_off() -> None:
    rec, _sink, _ = recorder(registrations=False)
    reg = request("REGISTER", callee="alice")
    rec.registered("sip:alice@example.test", reg, make_response(reg, 200), FLOW)
    assert rec.pending() == 0


def test_full_queue_drops_and_counts() -> None:
    rec, _, _ = recorder(max_queue=2)
    for n in range(5):
        done = rec.outcome(request("MESSAGE", call_id=f"m{n}"))
        assert done is not None
        done(200)
    assert (rec.pending(), rec.dropped) == (2, 3)


def test_database_failure_keeps_records_for_the_next_round() -> None:
    rec, sink, _ = recorder()
    done = rec.outcome(request("MESSAGE"))
    assert done is not None
    done(200)
    sink.fail = True
    with pytest.raises(OSError):
        flush(rec)
    assert rec.pending() == 1
    sink.fail = False
    flush(rec)
    assert rec.pending() == 0 and len(sink.rows) == 1


def test_sweep_closes_calls_with_no_bye() -> None:
    rec, sink, clock = recorder(max_call_duration=3600)
    done = rec.outcome(request("INVITE"))
    assert done is not None
    done(200)
    clock.now += 1800
    assert rec.sweep() == 0
    clock.now += 1801
    assert rec.sweep() == 1
    flush(rec)
    assert sink.rows[0].reason == "no BYE seen"


def test_run_writes_in_the_background_and_flushes_at_stop() -> None:
    rec, sink, _clock = recorder(flush_interval=0.01)

    async def main() -> None:
        task = asyncio.create_task(rec.run())
        done = rec.outcome(request("MESSAGE"))
        assert done is not None
        done(200)
        await asyncio.wait_for(sink.wrote.wait(), DEADLINE)
        assert len(sink.rows) == 1
        call = rec.outcome(request("INVITE", call_id="open"))
        assert call is not None
        call(200)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert [r.reason for r in sink.rows] == ["delivered", "in progress at server stop"]
    assert sink.rows[1].ended_at is None


def test_purge_uses_the_retention() -> None:
    rec, sink, clock = recorder(retention=86400.0)
    asyncio.run(rec.purge_expired())
    assert sink.purged_before == dt.datetime.fromtimestamp(clock.now - 86400, dt.UTC)
