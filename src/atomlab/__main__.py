"""``python -m atomlab`` runs the CLI."""

from atomlab.cli.main import main

main()
