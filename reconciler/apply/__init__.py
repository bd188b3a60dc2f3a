"""Apply: carry out a plan's changes through the client, follow every job, record what happened.

- ``executor``: the Executor (ordering, concurrency, delta uploads, recording and journaling);
- ``outcome``: what happened to each lookup (statuses, ``Outcome``, ``summarize``), the console
  protocol the executor reports to, and a change's journal entry.

The package itself imports nothing heavy: views read outcomes without loading the HTTP client.
"""
