"""``clearml.automation.hpbandster`` as hpo has it."""

from hpo.strategies.bohb import OptimizerBOHB

__all__ = ["OptimizerBOHB"]
