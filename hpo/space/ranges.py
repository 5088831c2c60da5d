"""Hyperparameter ranges, shaped like ``clearml.automation.parameters``.

A range has a ``name`` (as the task knows it: ``lr``, ``Args/lr``; ``key`` is the
qualified ``Section/name``), draws one random value with ``get_value(rng)`` and, when
finite, lists its grid with ``to_list()`` / ``values()``. Grid values are computed in
decimal arithmetic from the numbers as written, so ``0.1 + 2 * 0.1`` is ``0.3`` and no
value ever lies beyond ``max_value``.

``to_dict()`` / ``Parameter.from_dict()`` round-trip a range through JSON, e.g.
``{"type": "uniform", "name": "lr", "min_value": 0.001, "max_value": 0.1,
"step_size": null, "include_max_value": true}``. ClearML's class names are accepted as
``type`` too.

A whole search space (a list of ranges: its size, its ``i``-th combination) is
``hpo.space.product``'s.
"""

from __future__ import annotations

import abc
import decimal
import enum
import inspect
import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hpo.defaults import MAX_FLOAT_BOUND, MAX_INT_BOUND
from hpo.errors import ConfigError
from hpo.limits import check_name, short
from hpo.typed_params import qualify

__all__ = [
    "DiscreteParameterRange",
    "Kind",
    "LogUniformParameterRange",
    "Parameter",
    "ParameterSet",
    "UniformIntegerParameterRange",
    "UniformParameterRange",
    "canonical",
]


class Kind(enum.StrEnum):
    """What an adapter (Optuna and the like) needs to know to map a range."""

    FLOAT = "float"
    INT = "int"
    LOG = "log"
    CATEGORICAL = "categorical"
    SET = "set"


# Used when get_value() is called without a generator (ClearML-style direct calls).
_default_rng = random.Random()
# Enough digits that a float's repr times any realistic index is exact.
_DEC = decimal.Context(prec=60)
# A step count within this of the next integer counts as that integer: 0.3 / 0.1 is
# 2.9999999999999996 in binary floating point and must give 4 grid values, not 3.
_COUNT_TOLERANCE = 1e-9


def canonical(value: Any) -> str:
    """The JSON text that identifies a value or a configuration (keys sorted)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _number(value: Any, what: str, owner: str) -> int | float:
    item = getattr(value, "item", None)  # numpy scalars
    if not isinstance(value, int | float) and callable(item):
        value = item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{owner}: {what} must be a number, got {short(value)}")
    if isinstance(value, int) and abs(value) > MAX_INT_BOUND:  # before isfinite: 10**400
        raise ConfigError(f"{owner}: {what} {short(value)} is beyond ±2**53 (the integers "
                          "a float holds exactly): give a smaller one")
    if not math.isfinite(value):
        # A YAML 1e400 reads as inf: say so, it is not what the user wrote.
        raise ConfigError(f"{owner}: {what} must be a finite number, got {value!r}: give one "
                          f"from -{MAX_FLOAT_BOUND:g} to {MAX_FLOAT_BOUND:g}")
    if abs(value) > MAX_FLOAT_BOUND:
        raise ConfigError(f"{owner}: {what} {value!r} is beyond ±{MAX_FLOAT_BOUND:g}: give a "
                          "smaller one (the width of the range must stay finite)")
    return value



def _json_value(value: Any, owner: str) -> Any:
    try:
        canonical(value)
    except (TypeError, ValueError):
        item = getattr(value, "item", None)
        if callable(item):
            return _json_value(item(), owner)
        raise ConfigError(f"{owner}: value {value!r} is not a JSON value: use numbers, "
                          "strings, booleans, null, or lists/dicts of them") from None
    return value


def _dec(value: int | float) -> decimal.Decimal:
    # repr() is the shortest text that reads back as the same float: the number the
    # user wrote, so decimal arithmetic on it has none of the binary noise.
    return decimal.Decimal(value) if isinstance(value, int) else decimal.Decimal(repr(value))


class Parameter(abc.ABC):
    """A hyperparameter range. Subclasses set ``type_name`` and ``kind``."""

    type_name: ClassVar[str]
    kind: ClassVar[Kind]

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{type(self).__name__}: give a non-empty name, e.g. 'lr' or "
                              f"'Args/lr' (got {short(name)})")
        check_name("parameter", name, f"{type(self).__name__} name")
        self.name = name
        self.key = qualify(name)

    # -- what subclasses implement -------------------------------------------------

    @property
    @abc.abstractmethod
    def size(self) -> int | None:
        """The number of grid values; None for a continuous range."""

    @abc.abstractmethod
    def _value(self, index: int) -> Any:
        """The ``index``-th grid value (0 <= index < size)."""

    @abc.abstractmethod
    def _sample(self, rng: random.Random) -> Any:
        """One random value."""

    @abc.abstractmethod
    def _fields(self) -> dict[str, Any]:
        """The constructor arguments, for to_dict()."""

    # -- the ClearML-shaped interface ----------------------------------------------

    @property
    def names(self) -> list[str]:
        """The parameter names a value of this range sets."""
        return [self.name]

    @property
    def is_finite(self) -> bool:
        return self.size is not None

    def get_value(self, rng: random.Random | None = None) -> dict[str, Any]:
        """One random sample, as ``{name: value}``."""
        return {self.name: self._sample(rng or _default_rng)}

    def value_at(self, index: int) -> dict[str, Any]:
        """The ``index``-th grid point, as ``{name: value}``."""
        return {self.name: self._value(index)}

    def values(self) -> list[Any]:
        """Every grid value, in increasing order of the index."""
        size = self.size
        if size is None:
            raise ConfigError(f"{type(self).__name__} {self.name!r} is continuous: give "
                              "step_size for grid search")
        return [self._value(i) for i in range(size)]

    def to_list(self) -> list[dict[str, Any]]:
        """Every grid value, as ``[{name: value}, ...]`` (ClearML's format)."""
        return [{self.name: v} for v in self.values()]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "name": self.name, **self._fields()}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Parameter:
        """A range from its ``to_dict()`` form (a JSON or YAML mapping)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a parameter must be a mapping with a 'type', got {data!r}")
        fields = dict(data)
        type_name = fields.pop("type", None)
        cls = _TYPES.get(type_name) if isinstance(type_name, str) else None
        if cls is None:
            known = ", ".join(t.type_name for t in _CLASSES)
            raise ConfigError(f"parameter {fields.get('name', data)!r}: unknown type "
                              f"{type_name!r}: use one of {known}")
        accepted = list(inspect.signature(cls.__init__).parameters)[1:]
        unknown = sorted(set(fields) - set(accepted))
        if unknown:
            raise ConfigError(f"{cls.__name__} {fields.get('name')!r}: unknown key "
                              f"{unknown[0]!r}: use {', '.join(accepted)}")
        try:
            return cls(**fields)
        except TypeError:  # a required argument is missing
            raise ConfigError(f"{cls.__name__} {fields.get('name')!r}: give every one of "
                              f"{', '.join(accepted)} (optional ones may be left out)") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Parameter):
            return NotImplemented
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # compared by content, so not hashable

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


class _NumericRange(Parameter):
    """What the float, log and integer ranges share: bounds, a step, a grid."""

    def __init__(self, name: str, min_value: float, max_value: float,
                 step_size: float | None = None, include_max_value: bool = True) -> None:
        super().__init__(name)
        owner = f"{type(self).__name__} {name!r}"
        self.min_value = self._bound(min_value, "min_value", owner)
        self.max_value = self._bound(max_value, "max_value", owner)
        self.step_size = None if step_size is None else self._step(step_size, owner)
        self.include_max_value = bool(include_max_value)
        if self.min_value > self.max_value:
            raise ConfigError(f"{owner}: min_value {self.min_value} is greater than max_value "
                              f"{self.max_value}: swap them")
        width = self.max_value - self.min_value
        if self.step_size is not None and width > 0 and self.step_size > width:
            raise ConfigError(f"{owner}: step_size {self.step_size} is larger than the range "
                              f"{self.min_value}..{self.max_value}: use a smaller step_size")
        if width == 0 and not self.include_max_value:
            raise ConfigError(f"{owner}: the range is empty (min_value == max_value and "
                              "include_max_value=False): widen it or include max_value")
        self._count = self._grid_count()

    def _bound(self, value: Any, what: str, owner: str) -> int | float:
        return _number(value, what, owner)

    def _step(self, value: Any, owner: str) -> int | float:
        step = _number(value, "step_size", owner)
        if step <= 0:
            raise ConfigError(f"{owner}: step_size must be > 0, got {step}: give a positive "
                              "step_size or none")
        return step

    def _grid_count(self) -> int | None:
        if self.min_value == self.max_value:
            return 1  # a constant: one value whatever the step
        if self.step_size is None:
            return None
        width = _DEC.subtract(_dec(self.max_value), _dec(self.min_value))
        ratio = float(_DEC.divide(width, _dec(self.step_size)))
        steps = math.floor(ratio + _COUNT_TOLERANCE)
        count = steps + 1
        if not self.include_max_value and self._point(steps) >= self.max_value:
            count -= 1
        return count

    def _point(self, index: int) -> float:
        if self.step_size is None:
            return float(self.min_value)
        exact = _DEC.add(_dec(self.min_value), _DEC.multiply(index, _dec(self.step_size)))
        value = float(exact)
        # A step that is not a decimal (1/3) lands a hair off max: call that max, and
        # never let a tolerated count overshoot it.
        if value >= self.max_value - _COUNT_TOLERANCE * self.step_size:
            return float(self.max_value)
        return value

    @property
    def size(self) -> int | None:
        return self._count

    def _value(self, index: int) -> Any:
        return self._point(index)

    def _sample_point(self, rng: random.Random) -> float:
        if self._count is not None:
            # Sampling picks a grid point, so a random search and a grid search of the
            # same range try the same values.
            return self._point(rng.randrange(self._count))
        while True:
            x = rng.uniform(self.min_value, self.max_value)
            if self.min_value <= x < self.max_value or (
                    self.include_max_value and x == self.max_value):
                return x

    def _sample(self, rng: random.Random) -> Any:
        return self._sample_point(rng)

    def _fields(self) -> dict[str, Any]:
        return {"min_value": self.min_value, "max_value": self.max_value,
                "step_size": self.step_size, "include_max_value": self.include_max_value}


class UniformParameterRange(_NumericRange):
    """Floats in [min_value, max_value], on a grid of ``step_size`` when given."""

    type_name = "uniform"
    kind = Kind.FLOAT


class LogUniformParameterRange(UniformParameterRange):
    """``base ** x`` for x uniform in [min_value, max_value]: the bounds are EXPONENTS
    (ClearML's semantics), so ``LogUniformParameterRange('lr', -4, -1)`` spans 1e-4..0.1."""

    type_name = "log_uniform"
    kind = Kind.LOG

    def __init__(self, name: str, min_value: float, max_value: float, base: float = 10,
                 step_size: float | None = None, include_max_value: bool = True) -> None:
        owner = f"{type(self).__name__} {name!r}"
        self.base = _number(base, "base", owner)
        if self.base <= 0 or self.base == 1:
            raise ConfigError(f"{owner}: base must be > 0 and not 1, got {self.base}: "
                              "use e.g. base=10 or base=2")
        super().__init__(name, min_value, max_value, step_size, include_max_value)
        for exponent in (self.min_value, self.max_value):
            try:
                float(self.base) ** exponent
            except OverflowError:
                raise ConfigError(f"{owner}: {self.base}**{exponent} overflows a float: "
                                  "min_value and max_value are exponents, use smaller ones"
                                  ) from None

    def _value(self, index: int) -> Any:
        return float(self.base) ** self._point(index)

    def _sample(self, rng: random.Random) -> Any:
        return float(self.base) ** self._sample_point(rng)

    def _fields(self) -> dict[str, Any]:
        return {"min_value": self.min_value, "max_value": self.max_value, "base": self.base,
                "step_size": self.step_size, "include_max_value": self.include_max_value}


class UniformIntegerParameterRange(_NumericRange):
    """Integers min_value, min_value + step_size, ... up to max_value."""

    type_name = "uniform_integer"
    kind = Kind.INT

    def __init__(self, name: str, min_value: int, max_value: int, step_size: int | None = 1,
                 include_max_value: bool = True) -> None:
        # None (as written by to_dict() of another range, or YAML's null) means 1.
        super().__init__(name, min_value, max_value, 1 if step_size is None else step_size,
                         include_max_value)

    def _bound(self, value: Any, what: str, owner: str) -> int:
        number = _number(value, what, owner)
        if not isinstance(number, int):
            raise ConfigError(f"{owner}: {what} must be an integer, got {value!r}: use "
                              "UniformParameterRange for floats")
        return number

    def _step(self, value: Any, owner: str) -> int:
        step = self._bound(value, "step_size", owner)
        if step <= 0:
            raise ConfigError(f"{owner}: step_size must be >= 1, got {step}")
        return step

    def _grid_count(self) -> int:
        assert self.step_size is not None  # always set by __init__
        count = int((self.max_value - self.min_value) // self.step_size) + 1
        if not self.include_max_value and self._point(count - 1) == self.max_value:
            count -= 1
        return count

    def _point(self, index: int) -> int:  # ints, never floats
        return int(self.min_value + index * (self.step_size or 1))

    @property
    def size(self) -> int:
        assert self._count is not None
        return self._count


class DiscreteParameterRange(Parameter):
    """One of a list of values (categorical); values keep their types."""

    type_name = "discrete"
    kind = Kind.CATEGORICAL

    def __init__(self, name: str, values: Sequence[Any]) -> None:
        super().__init__(name)
        owner = f"{type(self).__name__} {name!r}"
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
            raise ConfigError(f"{owner}: values must be a list, e.g. values=[16, 32, 64]")
        if not values:
            raise ConfigError(f"{owner}: values is empty: give at least one value")
        self._values = [_json_value(v, owner) for v in values]
        seen: set[str] = set()
        for value in self._values:
            text = canonical(value)
            if text in seen:
                raise ConfigError(f"{owner}: value {value!r} is listed twice: remove the "
                                  "duplicate")
            seen.add(text)

    @property
    def size(self) -> int:
        return len(self._values)

    def _value(self, index: int) -> Any:
        return self._values[index]

    def _sample(self, rng: random.Random) -> Any:
        return rng.choice(self._values)

    def _fields(self) -> dict[str, Any]:
        return {"values": list(self._values)}


class ParameterSet(Parameter):
    """One of several whole combinations of parameters, e.g.
    ``ParameterSet([{"opt": "sgd", "lr": 0.1}, {"opt": "adam", "lr": 0.001}])``.
    ``get_value`` returns a whole combination. ``name`` is only a label (ClearML has
    none); ``names`` lists the parameters the set assigns."""

    type_name = "set"
    kind = Kind.SET

    def __init__(self, parameter_combinations: Sequence[Mapping[str, Any]],
                 name: str = "parameter_set") -> None:
        super().__init__(name)
        owner = f"ParameterSet {name!r}"
        combos = parameter_combinations
        if isinstance(combos, str | bytes | Mapping) or not isinstance(combos, Sequence):
            raise ConfigError(f"{owner}: parameter_combinations must be a list of dicts")
        if not combos:
            raise ConfigError(f"{owner}: parameter_combinations is empty: give at least one")
        self._combinations: list[dict[str, Any]] = []
        seen: set[str] = set()
        for combo in combos:
            checked = self._check(combo, owner)
            text = canonical(checked)
            if text in seen:
                raise ConfigError(f"{owner}: combination {checked!r} is listed twice: "
                                  "remove the duplicate")
            seen.add(text)
            self._combinations.append(checked)

    @staticmethod
    def _check(combo: Any, owner: str) -> dict[str, Any]:
        if not isinstance(combo, Mapping) or not combo:
            raise ConfigError(f"{owner}: each combination must be a non-empty dict of "
                              f"name -> value, got {combo!r}")
        keys: set[str] = set()
        for name, value in combo.items():
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"{owner}: parameter names must be non-empty strings, "
                                  f"got {short(name)}")
            check_name("parameter", name, f"{owner}: parameter name")
            if isinstance(value, Parameter):
                raise ConfigError(f"{owner}: {name!r} is a range; a combination holds plain "
                                  "values: list the range beside the set instead")
            key = qualify(name)
            if key in keys:
                raise ConfigError(f"{owner}: {key} appears twice in {dict(combo)!r}: keep one")
            keys.add(key)
            _json_value(value, owner)
        return dict(combo)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(n for combo in self._combinations for n in combo))

    @property
    def size(self) -> int:
        return len(self._combinations)

    def _value(self, index: int) -> Any:
        return dict(self._combinations[index])

    def _sample(self, rng: random.Random) -> Any:
        return dict(rng.choice(self._combinations))

    def get_value(self, rng: random.Random | None = None) -> dict[str, Any]:
        return self._sample(rng or _default_rng)

    def value_at(self, index: int) -> dict[str, Any]:
        return self._value(index)

    def to_list(self) -> list[dict[str, Any]]:
        return self.values()

    def _fields(self) -> dict[str, Any]:
        return {"parameter_combinations": [dict(c) for c in self._combinations]}


_CLASSES: tuple[type[Parameter], ...] = (
    UniformParameterRange, UniformIntegerParameterRange, LogUniformParameterRange,
    DiscreteParameterRange, ParameterSet)
_TYPES: dict[str, type[Parameter]] = {
    **{cls.type_name: cls for cls in _CLASSES}, **{cls.__name__: cls for cls in _CLASSES}}
