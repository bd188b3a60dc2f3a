"""The ``reconciler`` console script and ``python -m reconciler``.

``reconciler --version`` is answered here, before the command line is built: CI recipes run it
before every job to check the installed version, and typer with this CLI's options costs a
process twice what printing a line does. Everything else goes to ``reconciler.cli``.
"""

from __future__ import annotations

import os
import sys


def prepare() -> None:
    """What this process sets before it imports the command line (see the comments)."""
    # httpx imports its own command line (click, rich's progress, pygments: ~35 ms of every
    # command) unless that import fails, which it answers with a stub; this process never runs
    # httpx's command line. A None in sys.modules makes the import fail, as Python documents.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    # pydantic runs the plugins installed packages register for it (entry points of the group
    # "pydantic") on every validation, settings and state records naming secrets included: none
    # of that is another package's to see. Set to anything else (even empty), it is left as is.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def main() -> None:
    """Print the version for a bare ``--version``; otherwise run the command line."""
    if sys.argv[1:] == ["--version"]:
        from reconciler import __version__

        sys.stdout.write(f"reconciler {__version__}\n")
        sys.exit(0)
    prepare()
    from reconciler.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
