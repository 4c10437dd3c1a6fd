"""The one error type of the PKI package."""

from __future__ import annotations


class PkiError(Exception):
    """A certificate, key or TLS setting cannot be used.

    The message is one line that names the file or setting at fault, suitable
    for printing as-is by the CLI (``conclave: error: <message>``).
    """
