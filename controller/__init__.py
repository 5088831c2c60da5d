"""hpo.controller: the optimization controller (HyperParameterOptimizer, budgets and
limits, job monitor, reports, the ``hpo-controller`` CLI). Built by the controller issue;
this package holds nothing yet."""
