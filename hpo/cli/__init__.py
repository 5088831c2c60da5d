"""The ``hpo`` command line (``hpo task``, ``hpo workers``, ``hpo ui``) and the helpers every
command line shares (``common``: store opening and one-line errors; ``output``: tables and
JSON)."""
