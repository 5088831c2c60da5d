"""hpo: self-hosted, distributed hyperparameter optimization.

Training scripts use ``Task`` and ``Logger`` (and ``hpo.task_parameters``, ClearML's
``TaskParameters``); importing this package costs only the standard library, because it
runs inside every task an agent starts. docs/clearml.md lists the ClearML calls that
exist here and those that do not.
"""

from hpo.errors import HpoError
from hpo.sdk.logger import Logger
from hpo.sdk.task import Task

__all__ = ["HpoError", "Logger", "Task"]
__version__ = "0.1.0"

# The optimization API, importable from `hpo` too, loaded on first use: a training script
# that imports hpo must not pay for it.
_AUTOMATION = {"DiscreteParameterRange", "GridSearch", "HyperParameterOptimizer",
               "LogUniformParameterRange", "ParameterSet", "RandomSearch", "SearchStrategy",
               "UniformIntegerParameterRange", "UniformParameterRange"}


def __getattr__(name: str) -> object:
    if name in _AUTOMATION:
        import hpo.automation

        return getattr(hpo.automation, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
