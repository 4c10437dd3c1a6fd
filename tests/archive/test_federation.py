"""The archiving notice the federation code will put on messages to partners."""

from __future__ import annotations

from conclave.services.archive.federation import (
    ARCHIVING_HEADER,
    add_archiving_notice,
    archiving_notice,
)
from conclave.sip.headers import Headers


def test_notice_is_set_replaced_and_removed() -> None:
    headers = Headers([("Archiving", "on; by=forged.example")])
    add_archiving_notice(headers, archived=True, domain="example.test")
    assert headers.get_all(ARCHIVING_HEADER) == ["on; by=example.test"]
    assert archiving_notice(headers) == "example.test"
    add_archiving_notice(headers, archived=False, domain="example.test")
    assert ARCHIVING_HEADER not in headers
    assert archiving_notice(headers) is None


def test_reading_notices() -> None:
    assert archiving_notice(Headers([("Archiving", "off")])) is None
    assert archiving_notice(Headers([("Archiving", "ON;BY=partner.example")])) == "partner.example"
    assert archiving_notice(Headers([("Archiving", "on")])) == ""
