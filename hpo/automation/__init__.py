"""hpo.automation: the ClearML-shaped optimization API (``clearml.automation``).

The parameter ranges are imported eagerly. The strategies are loaded on first use
(PEP 562 ``__getattr__``) because ``hpo.strategies`` imports
``hpo.automation.parameters``, which runs this file first: importing the strategies
here would be circular.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo.automation.parameters import (
    DiscreteParameterRange,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
    UniformIntegerParameterRange,
    UniformParameterRange,
)

if TYPE_CHECKING:
    from hpo.controller.optimizer import HyperParameterOptimizer
    from hpo.strategies import GridSearch, RandomSearch, SearchStrategy
    from hpo.strategies.bohb import OptimizerBOHB
    from hpo.strategies.optuna_search import OptimizerOptuna

_LAZY = {
    "SearchStrategy": "hpo.strategies",
    "RandomSearch": "hpo.strategies",
    "GridSearch": "hpo.strategies",
    "HyperParameterOptimizer": "hpo.controller.optimizer",
    "OptimizerBOHB": "hpo.strategies.bohb",
    "OptimizerOptuna": "hpo.strategies.optuna_search",
}

__all__ = [
    "DiscreteParameterRange",
    "GridSearch",
    "HyperParameterOptimizer",
    "LogUniformParameterRange",
    "OptimizerBOHB",
    "OptimizerOptuna",
    "Parameter",
    "ParameterSet",
    "RandomSearch",
    "SearchStrategy",
    "UniformIntegerParameterRange",
    "UniformParameterRange",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpo.automation' has no attribute {name!r}")
