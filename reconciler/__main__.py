"""The ``reconciler`` console script and ``python -m reconciler``.

``reconciler --version`` is answered here, before the command line is built: CI recipes run it
before every job to check the installed version, and typer with this CLI's options costs a
process twice what printing a line does. Everything else goes to ``reconciler.cli``.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Print the version for a bare ``--version``; otherwise run the command line."""
    if sys.argv[1:] == ["--version"]:
        from reconciler import __version__

        sys.stdout.write(f"reconciler {__version__}\n")
        sys.exit(0)
    from reconciler.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
