"""The console-script entry point: imports the CLI under a Ctrl-C guard.

Importing the command line takes a noticeable moment; a Ctrl-C during it must end like any other
interrupted command (exit 130, one line), not with a Python traceback.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130  # atomlab.core.errors.ExitCode.INTERRUPTED, without importing anything heavy


def main() -> None:
    try:
        from atomlab.cli.main import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted by the operator\n")
        sys.exit(INTERRUPTED)
    cli_main()
