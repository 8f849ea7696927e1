"""The console-script entry point: the fast path first, then the full command line under a
Ctrl-C guard.

``atomlab --version`` and ``atomlab instrument get NAME`` are answered by
:mod:`atomlab.cli.fastpath` without loading Typer, Rich or the settings model; everything else
imports :mod:`atomlab.cli.main`, which takes a noticeable moment: a Ctrl-C during it must end
like any other interrupted command (exit 130, one line), not with a Python traceback.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130  # atomlab.core.errors.ExitCode.INTERRUPTED, without importing anything heavy


def main() -> None:
    try:
        from atomlab.cli.fastpath import run as fast

        code = fast(sys.argv[1:])
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
        from atomlab.cli.main import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted by the operator\n")
        sys.exit(INTERRUPTED)
    cli_main()
