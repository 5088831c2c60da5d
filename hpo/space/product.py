"""A search space as the Cartesian product of its ranges (a list of
:class:`~hpo.space.ranges.Parameter`): checking that the ranges make one, its size, its
``i``-th combination, and a fingerprint that identifies it. Shared by the search
strategies; ``hpo.space.ranges`` holds the ranges themselves."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from hpo.errors import ConfigError
from hpo.space.ranges import Parameter, canonical
from hpo.typed_params import qualify

__all__ = ["check_space", "combination_at", "space_fingerprint", "space_size"]


def check_space(space: Sequence[Parameter | Mapping[str, Any]]) -> list[Parameter]:
    """The ranges of a search space (mappings are read with ``from_dict``); a
    ConfigError when it is empty or two ranges set the same parameter."""
    if isinstance(space, Parameter | Mapping | str) or not isinstance(space, Sequence):
        raise ConfigError("the search space must be a list of parameter ranges")
    params: list[Parameter] = []
    for item in space:
        if isinstance(item, Mapping):
            item = Parameter.from_dict(item)
        if not isinstance(item, Parameter):
            raise ConfigError(f"{item!r} is not a parameter range: use e.g. "
                              "UniformParameterRange('lr', 0.001, 0.1)")
        params.append(item)
    if not params:
        raise ConfigError("the search space is empty: give at least one parameter range")
    owners: dict[str, str] = {}
    for param in params:
        for name in param.names:
            key = qualify(name)
            if key in owners:
                raise ConfigError(f"{key} is set by two ranges ({owners[key]} and "
                                  f"{type(param).__name__} {param.name!r}): keep one")
            owners[key] = f"{type(param).__name__} {param.name!r}"
    return params


def space_size(space: Sequence[Parameter]) -> int | None:
    """The number of configurations; None when a range is continuous."""
    total = 1
    for param in space:
        if param.size is None:
            return None
        total *= param.size
    return total


def combination_at(space: Sequence[Parameter], index: int) -> dict[str, Any]:
    """The ``index``-th configuration of the Cartesian product, in the order of
    ``itertools.product`` (the last range varies fastest). Finite spaces only."""
    digits: list[dict[str, Any]] = []
    for param in reversed(space):
        assert param.size is not None  # callers check space_size first
        index, digit = divmod(index, param.size)
        digits.append(param.value_at(digit))
    config: dict[str, Any] = {}
    for part in reversed(digits):
        config.update(part)
    return config


def space_fingerprint(space: Sequence[Parameter]) -> str:
    """A short hash of the ranges, saved in a strategy's state so that restoring it
    into a different space fails instead of silently mixing configurations."""
    text = canonical([param.to_dict() for param in space])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
