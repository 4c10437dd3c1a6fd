"""``python -m conclave`` runs the ``conclave`` command."""

from conclave.cli import main

main()
