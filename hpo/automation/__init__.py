"""hpo.automation: the ClearML-shaped optimization API (``clearml.automation``), a facade.

It owns nothing: the ranges live in ``hpo.space``, the strategies in ``hpo.strategies``,
the optimizer in ``hpo.controller``; none of them imports this package, so there is no
cycle. ``OptimizerOptuna`` and ``OptimizerBOHB`` (also at ClearML's paths,
``hpo.automation.optuna`` and ``hpo.automation.hpbandster``) are loaded on first use only
because importing Optuna or hpbandster costs a few hundred milliseconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpo.controller.optimizer import HyperParameterOptimizer
from hpo.space import (
    DiscreteParameterRange,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.strategies import GridSearch, RandomSearch, SearchStrategy

if TYPE_CHECKING:
    from hpo.strategies.bohb import OptimizerBOHB
    from hpo.strategies.optuna_search import OptimizerOptuna

_HEAVY = {"OptimizerBOHB": "hpo.strategies.bohb", "OptimizerOptuna": "hpo.strategies.optuna_search"}

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
    if name in _HEAVY:
        return getattr(importlib.import_module(_HEAVY[name]), name)
    raise AttributeError(f"module 'hpo.automation' has no attribute {name!r}")
