"""``python -m atomlab`` runs the CLI."""

from atomlab.cli.entry import main

main()
