"""``clearml.automation.parameters`` as hpo has it: the ranges, which live in
``hpo.space.ranges``."""

from hpo.space.ranges import (
    DiscreteParameterRange,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
    UniformIntegerParameterRange,
    UniformParameterRange,
)

__all__ = [
    "DiscreteParameterRange",
    "LogUniformParameterRange",
    "Parameter",
    "ParameterSet",
    "UniformIntegerParameterRange",
    "UniformParameterRange",
]
