"""Errors raised by the store."""

from __future__ import annotations


class StoreError(Exception):
    """A storage operation failed; the message is one line, fit for the CLI."""


class NotFoundError(StoreError):
    """The user, binding or message named does not exist."""


class ConflictError(StoreError):
    """The operation would break a uniqueness rule (for example, a duplicate user)."""
