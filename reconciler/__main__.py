"""``python -m reconciler``: the same as the ``reconciler`` console script."""

from reconciler.cli import main

main()
