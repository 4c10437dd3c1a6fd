"""Conclave: a secure-by-default Unified Communications server."""

__version__ = "0.1.0"
