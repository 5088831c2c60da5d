"""hpo.space: the search space. ``ranges``: the parameter ranges (ClearML's
``UniformParameterRange`` and kin, with validation, grids, sampling and
``to_dict``/``from_dict``); ``product``: a list of ranges as one space, the maths the
strategies share (its size, its ``i``-th combination, its fingerprint). Standard library
only."""

from hpo.space.product import check_space, combination_at, space_fingerprint, space_size
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
    "check_space",
    "combination_at",
    "space_fingerprint",
    "space_size",
]
