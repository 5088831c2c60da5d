"""hpo.optimization: what an optimization is, as the store keeps it, for every process
that reads one (the controller, ``hpo-controller status``/``report``, the web view).

``config``: its settings, validated in one place for ``HyperParameterOptimizer(...)`` and
``hpo.yaml``; ``objective``: the objectives and the rule that scores a job; ``ranking``:
which job is best (``hpo.relations`` holds the tags that tie a clone to its optimization);
``summary``: progress, budget and the best jobs read from
the store alone; ``ends``: how each job ended, in the one vocabulary every line and
table uses.
"""
