"""`conclave cdr list|show` on a real data directory."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conclave.cli import main
from conclave.config import load_config
from conclave.store import Database
from conclave.store.cdr import Cdr, CdrStore

T0 = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cdr") / "data"
    subprocess.run(
        [sys.executable, "-m", "conclave", "init", "--domain", "example.test", "--dir", str(d)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    def cdr(kind: str, minute: int, caller: str, callee: str | None, status: int) -> Cdr:
        start = T0 + dt.timedelta(minutes=minute)
        return Cdr(
            kind=kind, call_id=f"id-{minute}", caller=f"sip:{caller}@example.test",
            callee=None if callee is None else f"sip:{callee}@example.test", started_at=start,
            ended_at=start, duration=1.5, status=status, reason="r", detail={"m": minute},
        )  # fmt: skip

    async def fill() -> None:
        async with Database(load_config(d).database_url(d)) as db:
            await CdrStore(db).insert_many(
                [
                    cdr("register", 0, "alice", None, 200),
                    cdr("im", 1, "alice", "bob", 200),
                    cdr("call", 2, "bob", "carol", 487),
                ]
            )

    asyncio.run(fill())
    return d


def listed(*args: str) -> list[dict[str, object]]:
    result = run("cdr", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return list(json.loads(result.output))


def test_list_filters(data: Path) -> None:
    d = str(data)
    assert [r["kind"] for r in listed("--dir", d)] == ["register", "im", "call"]
    assert [r["kind"] for r in listed("--dir", d, "--user", "alice")] == ["register", "im"]
    assert [r["kind"] for r in listed("--dir", d, "--user", "sip:carol@example.test")] == ["call"]
    assert [r["kind"] for r in listed("--dir", d, "--kind", "im")] == ["im"]
    since = listed("--dir", d, "--since", "2026-11-26T08:01:00Z", "--until", "2026-11-26T08:02")
    assert [r["call_id"] for r in since] == ["id-1"]
    assert len(listed("--dir", d, "--limit", "1")) == 1
    first = listed("--dir", d)[0]
    assert first["start"] == "2026-11-26T08:00:00Z" and first["detail"] == {"m": 0}


def test_list_as_a_table(data: Path) -> None:
    result = run("cdr", "list", "--dir", str(data))
    assert result.exit_code == 0
    assert "sip:bob@example.test -> sip:carol@example.test" in result.output
    assert "487" in result.output
    empty = run("cdr", "list", "--dir", str(data), "--user", "nobody")
    assert "no records" in empty.output


def test_show_by_id_and_call_id(data: Path) -> None:
    first = listed("--dir", str(data))[1]
    by_id = run("cdr", "show", str(first["id"]), "--dir", str(data), "--json")
    assert json.loads(by_id.output)[0]["call_id"] == "id-1"
    by_call = run("cdr", "show", "id-2", "--dir", str(data))
    assert "cancelled" not in by_call.output and "status: 487" in by_call.output
    missing = run("cdr", "show", "nope", "--dir", str(data))
    assert missing.exit_code == 1 and "no CDR" in missing.output


def test_bad_kind_is_a_usage_error(data: Path) -> None:
    assert run("cdr", "list", "--dir", str(data), "--kind", "fax").exit_code == 2
