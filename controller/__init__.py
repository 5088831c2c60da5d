"""hpo.controller: runs an optimization.

``optimizer`` (``HyperParameterOptimizer``, ClearML's shape) validates the settings
(``hpo.optimization.config``), creates the optimizer task and runs ``controller`` (the
loop: launch trials, watch their reports, enforce every limit and budget; ``jobs`` is
what it knows of each job, ``clock`` its time); ``local_agents`` starts agents on this
machine (``agent_forks``: forked from ``hpo-controller``). ``hpo-controller``: ``cli``
(parser and commands), ``yaml_config`` (``hpo.yaml``), ``session`` (one optimization run
in this process), ``display`` and ``formatting`` (how it is shown). Reads of an
optimization from the store alone live in ``hpo.optimization``.
"""
