"""Fixtures for the attacker-style tests: the end-to-end harness's real server."""

from __future__ import annotations

from tests.e2e.conftest import PASSWORDS, make_server

__all__ = ["PASSWORDS", "make_server"]
