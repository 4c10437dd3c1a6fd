"""Subcommands of the ``conclave`` CLI, one module per group."""
