"""``TaskParameters``, ``param``, ``percent_param``, ``range_validator``: a typed
parameter class connected to a task, at ClearML's path (``clearml.task_parameters``).

    class Params(TaskParameters):
        iterations = param(type=int, desc="epochs", range=(0, 100000), default=10)
        target_accuracy = percent_param(desc="stop here", default=0.9)

    params = Params()               # or Params(iterations=5, target_accuracy=0.8)
    params.connect(task)            # by hand: recorded; under an agent: overridden

The values live in section ``General`` (``task.connect(obj)``'s). Validators (``type``,
``range``, any callable ``(instance, attribute, value)``) run when an instance is made,
as with ClearML's attrs classes (not on later assignment). Standard library only: no
attrs needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

__all__ = ["TaskParameters", "param", "percent_param", "range_validator"]

Validator = Callable[[Any, Any, Any], None]
_NOTHING = object()


class Attribute(NamedTuple):
    """What a validator is told about the parameter it checks (attrs' ``Attribute``)."""

    name: str
    type: type | None
    metadata: dict[str, Any]


class _Param:
    """A ``param()`` declaration in a class body, until the class is made."""

    def __init__(self, validators: list[Validator], type_: type | None,
                 metadata: dict[str, Any], default: Any, factory: Callable[[], Any] | None
                 ) -> None:
        self.validators = validators
        self.type = type_
        self.metadata = metadata
        self.default = default
        self.factory = factory

    def initial(self, name: str) -> Any:
        if self.factory is not None:
            return self.factory()
        if self.default is _NOTHING:
            raise TypeError(f"missing a value for parameter {name!r} (it has no default)")
        return self.default


def range_validator(min_value: float | None, max_value: float | None) -> Validator:
    """A validator: ``min_value <= value <= max_value`` (None: no limit on that side)."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if ((min_value is not None and value < min_value)
                or (max_value is not None and value > max_value)):
            raise ValueError(f"{attribute.name} must be in range [{min_value}, {max_value}]")

    return check


def _instance_of(kind: type) -> Validator:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{attribute.name} must be {kind.__name__}, not "
                            f"{type(value).__name__} ({value!r})")

    return check


def param(validator: Validator | Iterable[Validator] | None = None,
          range: tuple[float | None, float | None] | None = None,
          type: type | None = None,
          desc: str | None = None, metadata: dict[str, Any] | None = None,
          *args: Any, **kwargs: Any) -> Any:
    """A parameter of a ``TaskParameters`` class: ``default=`` (or ``factory=``),
    validators, a ``type`` (int, float, str; None: any) and a ``range`` (min, max)."""
    if args:
        raise TypeError("param() takes keyword arguments after metadata (default=...)")
    unknown = set(kwargs) - {"default", "factory"}
    if unknown:
        raise TypeError(f"param() does not take {sorted(unknown)} (docs/clearml.md)")
    validators: list[Validator] = ([] if validator is None else [validator]
                                   if callable(validator) else list(validator))
    if type is not None:
        validators.append(_instance_of(type))
    if range is not None:
        validators.append(range_validator(*range))
    return _Param(validators, type, {**(metadata or {}), "desc": desc},
                  kwargs.get("default", _NOTHING), kwargs.get("factory"))


def percent_param(*args: Any, **kwargs: Any) -> Any:
    """A float parameter in [0, 1]."""
    return param(*args, **{**kwargs, "range": (0, 1), "type": float})


class TaskParameters:
    """Base of a parameter class; its ``param()`` attributes become instance values,
    given in order or by name when it is made, defaults for the rest."""

    _params: dict[str, _Param] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params = dict(cls._params)  # a base class's parameters first
        for name, value in list(vars(cls).items()):
            if isinstance(value, _Param):
                params[name] = value
                delattr(cls, name)
        cls._params = params

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = list(self._params)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} values")
        given = dict(zip(names, args, strict=False))
        twice = set(given) & set(kwargs)
        unknown = set(kwargs) - set(names)
        if twice or unknown:
            raise TypeError(f"{type(self).__name__}: "
                            + (f"{sorted(twice)} given twice" if twice else
                               f"unknown parameter(s) {sorted(unknown)}"))
        given.update(kwargs)
        for name, spec in self._params.items():
            value = given[name] if name in given else spec.initial(name)
            attribute = Attribute(name, spec.type, spec.metadata)
            for check in spec.validators:
                check(self, attribute, value)
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """``{name: value}``; a nested TaskParameters value becomes its dict."""
        return {name: (value.to_dict() if isinstance(value, TaskParameters) else value)
                for name in self._params for value in [getattr(self, name)]}

    def update_from_dict(self, source_dict: dict[str, Any]) -> None:
        """Set values by name; an unknown name is a ValueError."""
        for key, value in source_dict.items():
            if key not in self._params:
                raise ValueError(f"Unknown key {key} in {type(self).__name__} object")
            setattr(self, key, value)

    def connect(self, task: Any) -> Any:
        """``task.connect(self)``: by hand the values are recorded, under an agent the
        task's (possibly overridden) values replace them."""
        return task.connect(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskParameters) and type(other) is type(self) and (
            self.to_dict() == other.to_dict())

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value (attrs' rule)

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._params)
        return f"{type(self).__name__}({values})"
