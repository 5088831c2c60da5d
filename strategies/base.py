"""The contract between the controller and a search strategy.

The controller owns everything about jobs (launching, limits, budgets, stopping); a
strategy only decides *what* to try and whether a running trial is worth continuing:

* ``suggest()`` -> a :class:`Suggestion` (parameters and an iteration budget), or
  ``NoSuggestion.WAIT`` (ask again when a result arrives) or ``NoSuggestion.DONE``.
* ``on_report(trial_id, iteration, values)`` -> ``Decision.CONTINUE`` or ``STOP`` for an
  intermediate objective report. The controller never stops a job before
  ``min_iteration_per_job`` whatever the answer.
* ``on_result(trial_id, values)`` once per trial: the final objective values, or None
  when the job failed (crashed, never reported, reported NaN).
* ``state()`` / ``restore(state)``: a JSON-serialisable snapshot, saved by the
  controller after every suggestion and result, so a resumed optimization neither
  repeats nor loses a trial.

Methods are called from one controller thread; implementations need no locking.
``values`` are in the order of ``objectives``; each ``Objective`` says whether lower or
higher is better.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from hpo.errors import ConfigError
from hpo.optimization.objective import Objective

if TYPE_CHECKING:
    from hpo.space.ranges import Parameter


class Decision(enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"


class NoSuggestion(enum.Enum):
    WAIT = "wait"  # nothing to launch now; ask again after the next result
    DONE = "done"  # the search is over (space exhausted, or the strategy's own budget)


@dataclass(frozen=True)
class Suggestion:
    """One configuration to run. ``parameters`` are keyed by the ranges' names.
    ``max_iteration``: the job is stopped once its objective reaches this iteration
    (None: ``max_iteration_per_job``)."""

    trial_id: str
    parameters: dict[str, Any]
    max_iteration: int | None = None
    # Reserved for strategies that continue a trial from a checkpoint (ASHA).
    resume_from: str | None = None


@dataclass
class SearchStrategy(abc.ABC):
    """Base of every strategy. Subclasses take their own keyword arguments after these
    (the optimizer passes unknown keyword arguments on to the strategy)."""

    space: Sequence[Parameter]
    objectives: Sequence[Objective]
    min_iteration_per_job: int | None = None
    max_iteration_per_job: int | None = None
    total_max_jobs: int | None = None
    seed: int | None = None

    #: Whether the strategy can optimise several objectives at once.
    supports_multi_objective: ClassVar[bool] = False
    #: The name used in config files (``strategy: random``).
    name: ClassVar[str] = ""

    def attach(self, store_url: str, optimization_id: str) -> None:  # noqa: B027
        """Called once by the controller before the first ``suggest`` (and before
        ``restore``): where the optimization's data lives. Optional."""

    @abc.abstractmethod
    def suggest(self) -> Suggestion | NoSuggestion: ...

    def on_report(self, trial_id: str, iteration: int, values: Sequence[float]) -> Decision:
        return Decision.CONTINUE

    def on_result(self, trial_id: str, values: Sequence[float] | None) -> None:  # noqa: B027
        """Hear a trial's final values (None: it failed). Optional."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def restore(self, state: dict[str, Any]) -> None: ...


def check_seed(strategy: str, seed: object, *, text: bool = False) -> None:
    """Refuse a seed the strategy could start from but not restore alike: an integer
    (not a bool), or None for one of its own; with ``text``, a string too (random.Random
    takes one). A float or a bool would run, then be saved as another seed or refused."""
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool)) or (
            text and isinstance(seed, str)):
        return
    kinds = "an integer or a string" if text else "an integer"
    raise ConfigError(f"{strategy}: seed must be {kinds}, not {seed!r}: e.g. seed: 7")


@dataclass
class _Registry:
    strategies: dict[str, type[SearchStrategy]] = field(default_factory=dict)


_registry = _Registry()
# The built-in strategies, each imported (and so registered) when first named: Optuna's
# and hpbandster's libraries are slow to import, and this module imports none of them.
_BUILTINS = {"random": "hpo.strategies.random_search", "grid": "hpo.strategies.grid_search",
             "optuna": "hpo.strategies.optuna_search", "bohb": "hpo.strategies.bohb",
             "asha": "hpo.strategies.asha"}


def register(cls: type[SearchStrategy]) -> type[SearchStrategy]:
    """Class decorator: make a strategy selectable by its ``name`` in config files."""
    _registry.strategies[cls.name] = cls
    return cls


def resolve(name_or_path: str | type[SearchStrategy]) -> type[SearchStrategy]:
    """A strategy class from a registered name (``random``), a dotted path
    (``my_package.strategies.MyStrategy`` or ``my_module:MyStrategy``) or a file
    (``/path/to/my_strategy.py:MyStrategy``)."""
    import importlib

    from hpo.errors import ConfigError

    if isinstance(name_or_path, type):
        if not issubclass(name_or_path, SearchStrategy):
            raise ConfigError(f"{name_or_path.__name__} is not a SearchStrategy subclass: "
                              "name one (a class derived from hpo.strategies.base."
                              "SearchStrategy)")
        return name_or_path
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError(f"strategy {name_or_path!r:.60}: give a registered name or a "
                          "dotted path to a SearchStrategy subclass")
    if name_or_path in _BUILTINS and name_or_path not in _registry.strategies:
        importlib.import_module(_BUILTINS[name_or_path])
    if name_or_path in _registry.strategies:
        return _registry.strategies[name_or_path]
    file_name, colon, attr = name_or_path.rpartition(":")
    if colon and file_name.endswith(".py"):
        return _strategy_class(_class_from_file(file_name, attr), name_or_path)
    module_name, sep, attr = name_or_path.replace(":", ".").rpartition(".")
    if not sep:
        known = ", ".join(sorted(set(_registry.strategies) | set(_BUILTINS)))
        raise ConfigError(f"unknown strategy {name_or_path!r}: use one of {known} or a "
                          "dotted path to a SearchStrategy subclass")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        # ValueError / TypeError: a path like "..x" that is no module name at all.
        raise ConfigError(f"cannot import strategy {name_or_path!r:.200}: {exc}") from None
    return _strategy_class(cls, name_or_path)


def _strategy_class(found: object, path: str) -> type[SearchStrategy]:
    """What a path named, if it is a strategy class: ``os.system`` or ``builtins.print``
    is a clean error, never a call."""
    from hpo.errors import ConfigError

    if not isinstance(found, type) or not issubclass(found, SearchStrategy):
        kind = f"the class {found.__name__}" if isinstance(found, type) else (
            f"a {type(found).__name__}, not a class")
        raise ConfigError(f"{path!r:.200} names {kind}, not a SearchStrategy subclass: "
                          "give one (derived from hpo.strategies.base.SearchStrategy) or a "
                          "registered name")
    return found


def _class_from_file(path: str, attr: str) -> type:
    import importlib.util
    import sys
    from pathlib import Path

    from hpo.errors import ConfigError

    module_name = f"hpo_user_strategy_{Path(path).stem}"
    if module_name not in sys.modules:
        try:
            exists = Path(path).is_file()
        except (OSError, ValueError):  # a name too long, a NUL: no such file either
            exists = False
        spec = importlib.util.spec_from_file_location(module_name, path) if exists else None
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import strategy file {path}: it does not exist")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: a syntax error, a failing import
            del sys.modules[module_name]
            raise ConfigError(f"cannot import strategy file {path}: {type(exc).__name__}: "
                              f"{exc}") from None
    try:
        cls: type = getattr(sys.modules[module_name], attr)
    except AttributeError:
        raise ConfigError(f"strategy file {path} has no class {attr!r}") from None
    return cls
