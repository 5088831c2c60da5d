"""hpo.space: the search space: parameter ranges (ClearML's ``UniformParameterRange`` and
kin, with validation and ``to_dict``/``from_dict``) and the space maths the strategies
share (sizes, the ``i``-th grid combination, sampling). Standard library only."""

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
