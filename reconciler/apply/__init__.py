"""Apply: carry out a plan's changes through the client, follow every job, record what happened.

- ``executor``: the Executor (ordering, concurrency, delta uploads, recording and journaling);
- ``outcome``: what happened to each lookup (statuses, ``Outcome``, ``summarize``);
- ``jobs``: a lookup's jobs for the ``jobs`` command, read with the same rule apply follows.

The package itself imports nothing heavy: views read outcomes without loading the HTTP client.
"""
