"""``hpo ui``: a small read-only web view of the store (optimizations, tasks, agents)."""
