"""``clearml.automation.optuna`` as hpo has it."""

from hpo.strategies.optuna_search import OptimizerOptuna

__all__ = ["OptimizerOptuna"]
