"""The plan: the three-way comparison (``builder``), what it refuses or warns of (``guards``), the plan
as data (``model``), element-level details (``details``), row diffs by key (``rows``) and the saved
plan (``saved``)."""
