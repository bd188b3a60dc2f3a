"""reconciler: keep Devo lookups in git (validate, plan, apply, drift, import, jobs, history)."""

__version__ = "0.2.0"
