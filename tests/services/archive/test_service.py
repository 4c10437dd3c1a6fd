"""The archiving agent: group commit, durable before delivery, critical mode, recovery."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from conclave.core.features import FeatureHost, Registry
from conclave.ops import metrics
from conclave.services.archive import REFUSAL_REASON, ArchiveFeature, ArchiveService
from conclave.services.archive.policy import ArchivePolicy, Override, Switches
from conclave.services.archive.segments import ArchiveLog
from conclave.services.archive.verify import verify
from conclave.services.archive.writer import ArchiveWriter
from conclave.sip.headers import Headers
from conclave.sip.message import Request
from conclave.sip.uri import parse_uri

from .helpers import message, records

DEADLINE = 10.0


def im(
    n: int, *, sender: str = "alice", to: str = "bob", extra: Sequence[tuple[str, str]] = ()
) -> Request:
    headers = Headers(
        [
            ("From", f"<sip:{sender}@example.test>;tag=t{n}"),
            ("To", f"<sip:{to}@example.test>"),
            ("Call-ID", f"call-{n}"),
            ("CSeq", "1 MESSAGE"),
            ("Content-Type", "text/plain"),
            *extra,
        ]
    )
    return Request("MESSAGE", parse_uri(f"sip:{to}@example.test"), headers, f"hi {n}".encode())


class Outcome:
    """What the service did with one message: proceeded, or refused with a status."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.delivered = False
        self.refused: tuple[int, str, list[tuple[str, str]]] | None = None

    def proceed(self) -> None:
        self.delivered = True
        self.done.set()

    def refuse(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        self.refused = (status, reason, headers)
        self.done.set()


def service(
    directory: Path,
    *,
    internal: bool = True,
    critical: bool = True,
    overrides: Sequence[Override] = (),
    load: Callable[[], Awaitable[Sequence[Override]]] | None = None,
    timeout: float = DEADLINE,
) -> ArchiveService:
    archive = ArchiveLog(directory)
    archive.create()
    return ArchiveService(
        writer=ArchiveWriter(archive),
        policy=ArchivePolicy(internal=internal, federated=True, overrides=overrides),
        domain="example.test",
        critical=critical,
        write_timeout=timeout,
        load_overrides=load,
    )


async def send(svc: ArchiveService, request: Request) -> Outcome:
    outcome = Outcome()
    gate = svc.before_delivery(request)
    refusal = None if gate is None else await asyncio.wait_for(gate, DEADLINE)
    if refusal is None:
        outcome.proceed()
    else:
        outcome.refuse(refusal.status, refusal.reason, list(refusal.headers))
    return outcome


async def with_writer(svc: ArchiveService, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(svc.writer.run())
    try:
        await body()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_policy_off_means_no_task_and_nothing_written(tmp_path: Path) -> None:
    svc = service(tmp_path, internal=False)

    async def main() -> None:
        assert svc.before_delivery(im(1)) is None

    asyncio.run(main())
    assert records(tmp_path) == []


def test_message_is_durable_before_delivery(tmp_path: Path) -> None:
    svc = service(tmp_path)
    seen_on_delivery: list[int] = []

    async def body() -> None:
        gate = svc.before_delivery(im(1, extra=[("Conversation-ID", "conv-9")]))
        assert gate is not None
        assert await asyncio.wait_for(gate, DEADLINE) is None
        # Delivery may happen only now, and the record is on disk already.
        seen_on_delivery.append(len(records(tmp_path)))

    asyncio.run(with_writer(svc, body))
    assert seen_on_delivery == [1]
    (record,) = records(tmp_path)
    assert record["sender"] == "sip:alice@example.test"
    assert record["recipients"] == ["sip:bob@example.test"]
    assert record["conversation_id"] == "conv-9" and record["call_id"] == "call-1"
    assert record["body"] == "hi 1" and record["content_type"] == "text/plain"


def test_concurrent_messages_share_fsyncs(tmp_path: Path) -> None:
    svc = service(tmp_path)

    async def body() -> None:
        outcomes = await asyncio.gather(*(send(svc, im(n)) for n in range(200)))
        assert all(o.delivered for o in outcomes)

    asyncio.run(with_writer(svc, body))
    assert len(records(tmp_path)) == 200
    assert svc.writer.batches < 200
    assert verify(tmp_path).ok


def test_user_override_archives_only_that_user(tmp_path: Path) -> None:
    svc = service(
        tmp_path,
        internal=False,
        overrides=[Override("user", "carol@example.test", Switches(internal=True))],
    )

    async def body() -> None:
        await send(svc, im(1))  # alice -> bob: not archived
        await send(svc, im(2, to="carol"))  # alice -> carol: carol is archived

    asyncio.run(with_writer(svc, body))
    assert [r["call_id"] for r in records(tmp_path)] == ["call-2"]


def test_messages_wait_for_the_first_policy_load(tmp_path: Path) -> None:
    async def body() -> None:
        gate = asyncio.Event()

        async def load() -> list[Override]:
            await gate.wait()
            return [Override("user", "alice@example.test", Switches(internal=True))]

        svc = service(tmp_path, internal=False, load=load)
        task = asyncio.create_task(svc.writer.run())
        reload = asyncio.create_task(svc.reload())
        pending = asyncio.create_task(send(svc, im(1)))
        await asyncio.sleep(0)
        assert not pending.done()
        gate.set()
        await reload
        outcome = await pending
        assert outcome.delivered
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(body())
    assert len(records(tmp_path)) == 1


def break_archive(directory: Path) -> Path:
    """Replace the archive directory by a file; return where it was moved."""
    moved = directory.with_name(directory.name + ".moved")
    os.rename(directory, moved)
    directory.write_text("not a directory\n")
    return moved


def restore_archive(directory: Path, moved: Path) -> None:
    directory.unlink()
    os.rename(moved, directory)


def test_critical_mode_refuses_then_resumes_by_itself(tmp_path: Path) -> None:
    directory = tmp_path / "archive"
    svc = service(directory)
    unavailable: list[bool] = []
    svc.observers.append(lambda _seconds, ok: unavailable.append(not ok))

    async def body() -> None:
        assert (await send(svc, im(1))).delivered
        moved = break_archive(directory)
        refused = await send(svc, im(2))
        assert not refused.delivered
        assert refused.refused is not None
        status, reason, headers = refused.refused
        assert (status, reason) == (503, REFUSAL_REASON)
        assert ("Retry-After", "10") in headers
        assert not svc.available
        restore_archive(directory, moved)
        assert (await send(svc, im(3))).delivered
        assert svc.available

    asyncio.run(with_writer(svc, body))
    assert [r["call_id"] for r in records(directory)] == ["call-1", "call-3"]
    assert [r["seq"] for r in records(directory)] == [1, 2]
    assert verify(directory).ok
    assert unavailable == [False, True, False]
    assert (svc.written, svc.failures, svc.refused) == (2, 1, 1)


def test_non_critical_mode_delivers_unarchived(tmp_path: Path) -> None:
    directory = tmp_path / "archive"
    svc = service(directory, critical=False)

    async def body() -> None:
        moved = break_archive(directory)
        outcome = await send(svc, im(1))
        assert outcome.delivered and outcome.refused is None
        restore_archive(directory, moved)

    asyncio.run(with_writer(svc, body))
    assert svc.failures == 1 and svc.refused == 0


def test_deleted_directory_is_not_silently_recreated(tmp_path: Path) -> None:
    directory = tmp_path / "archive"
    svc = service(directory)

    async def body() -> None:
        assert (await send(svc, im(1))).delivered
        shutil.rmtree(directory)
        outcome = await send(svc, im(2))
        assert outcome.refused is not None

    asyncio.run(with_writer(svc, body))
    assert not directory.exists()


def test_a_stuck_write_times_out_and_is_refused(tmp_path: Path) -> None:
    svc = service(tmp_path, timeout=0.05)

    async def main() -> None:
        # No writer task runs: the write never completes.
        outcome = await send(svc, im(1))
        assert outcome.refused is not None and outcome.refused[0] == 503

    asyncio.run(main())


def test_writer_stop_fails_queued_records(tmp_path: Path) -> None:
    archive = ArchiveLog(tmp_path)
    archive.create()
    writer = ArchiveWriter(archive)

    async def main() -> None:
        task = asyncio.create_task(writer.run())
        first = writer.append(message(1))
        await asyncio.wait_for(first, DEADLINE)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        late = writer.append(message(2))
        try:
            await late
        except Exception as exc:
            assert "stopped" in str(exc)
        else:
            raise AssertionError("append after stop succeeded")

    asyncio.run(main())
    assert len(records(tmp_path)) == 1


def test_the_feature_records_write_times_and_failures_in_metrics(tmp_path: Path) -> None:
    """conclave_archive_write_seconds and conclave_archive_failures_total move (they
    stayed 0 while the service's observers list was empty)."""
    directory = tmp_path / "archive"
    svc = service(directory)
    feature = ArchiveFeature(svc)
    registry = Registry()
    feature.register(cast(FeatureHost, SimpleNamespace(registry=registry)))
    feature.register(cast(FeatureHost, SimpleNamespace(registry=Registry())))  # once only
    assert svc.observers == [metrics.observe_archive_write]

    def sample(name: str) -> float:
        return metrics.REGISTRY.get_sample_value(name) or 0.0

    writes = sample("conclave_archive_write_seconds_count")
    failures = sample("conclave_archive_failures_total")

    async def body() -> None:
        assert (await send(svc, im(1))).delivered
        assert (await send(svc, im(2))).delivered
        moved = break_archive(directory)
        assert (await send(svc, im(3))).refused is not None
        restore_archive(directory, moved)

    asyncio.run(with_writer(svc, body))
    assert sample("conclave_archive_write_seconds_count") == writes + 2
    assert sample("conclave_archive_failures_total") == failures + 1


def test_policies_never_loaded_count_as_a_failure(tmp_path: Path) -> None:
    async def never() -> list[Override]:
        await asyncio.Event().wait()
        return []

    svc = service(tmp_path, load=never, timeout=0.05)
    failed: list[bool] = []
    svc.observers.append(lambda _seconds, ok: failed.append(not ok))

    async def main() -> None:
        outcome = await send(svc, im(1))
        assert outcome.refused is not None and outcome.refused[0] == 503

    asyncio.run(main())
    assert failed == [True]
