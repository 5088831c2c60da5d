"""An optimization's settings: what ``HyperParameterOptimizer`` and ``hpo.yaml`` take,
validated once, before anything is launched, and saved in the store for resume."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hpo import defaults, limits, pickle_text
from hpo import typed_params as P
from hpo.errors import ConfigError
from hpo.optimization.objective import SIGNS, Objective
from hpo.space.ranges import Parameter


@dataclass
class OptimizerConfig:
    base_task_id: str
    hyper_parameters: list[Parameter]
    objectives: list[Objective]
    strategy: str  # a registered name or a dotted path
    strategy_kwargs: dict[str, Any] = field(default_factory=dict)
    max_number_of_concurrent_tasks: int = 10
    execution_queue: str = "default"
    optimization_time_limit: float | None = None  # minutes of wall time
    compute_time_limit: float | None = None  # minutes summed over all jobs
    total_max_jobs: int | None = None
    min_iteration_per_job: int | None = None
    max_iteration_per_job: int | None = None
    time_limit_per_job: float | None = None  # minutes
    save_top_k_tasks_only: int | None = None
    spawn_project: str | None = None
    # Stop the optimization (exit code 1) when the first this-many jobs to finish all end
    # without the objective (failed, or never reported it): a typo or a crash costs
    # minutes, not the budget. 0: never (ClearML's behaviour).
    fail_fast: int = defaults.FAIL_FAST_JOBS
    # Tune names the base task does not have (the script reads them though it never
    # connected them); off, such a name is an error (a typo tunes nothing).
    allow_new_parameters: bool = False

    def validate(self) -> None:
        """The one check of an optimization's settings, for ``HyperParameterOptimizer(...)``
        and ``hpo.yaml`` alike (the yaml reader adds only the shape of its own file): a
        bad value is one ConfigError line that names the setting and the fix."""
        if not self.base_task_id:
            raise ConfigError("no base task: give base_task_id (or base_task in hpo.yaml)")
        if not self.hyper_parameters:
            raise ConfigError("no hyper_parameters to optimize: give at least one range")
        names = [p.name for p in self.hyper_parameters]
        if len(set(names)) != len(names):
            raise ConfigError(f"a hyper-parameter is listed twice in {names}")
        if not self.objectives:
            raise ConfigError("no objective: give objective_metric_title and "
                              "objective_metric_series")
        for objective in self.objectives:
            if objective.sign not in SIGNS:
                raise ConfigError(f"objective_metric_sign {objective.sign!r}: use one of "
                                  f"{', '.join(SIGNS)}")
            if not objective.title or not objective.series:
                raise ConfigError("objective_metric_title and objective_metric_series must "
                                  "not be empty")
            limits.check_name("metric", objective.title, "objective_metric_title")
            limits.check_name("metric", objective.series, "objective_metric_series")
        _positive_int("max_number_of_concurrent_tasks", self.max_number_of_concurrent_tasks,
                      optional=False)
        _positive_int("total_max_jobs", self.total_max_jobs, unset="for no limit")
        _positive_int("min_iteration_per_job", self.min_iteration_per_job, allow_zero=True)
        _positive_int("max_iteration_per_job", self.max_iteration_per_job,
                      unset="for no iteration budget")
        _positive_int("save_top_k_tasks_only", self.save_top_k_tasks_only,
                      unset="to keep every job")
        _positive_int("fail_fast", self.fail_fast, allow_zero=True, optional=False)
        for name in ("optimization_time_limit", "compute_time_limit", "time_limit_per_job"):
            value = getattr(self, name)
            most = defaults.MAX_SECONDS / 60
            if value is None:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and value > most:  # first: isfinite(10**400) is an OverflowError
                raise ConfigError(f"{name} {limits.short(value)} is more than {most:g} minutes "
                                  "(about 30 years): give a real limit, or leave it out for "
                                  "no limit")
            if not (number and value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of minutes, not "
                                  f"{limits.short(value)}: give e.g. 30, or leave it out for "
                                  "no limit")
        if (self.min_iteration_per_job is not None and self.max_iteration_per_job is not None
                and self.min_iteration_per_job > self.max_iteration_per_job):
            raise ConfigError(
                f"min_iteration_per_job {self.min_iteration_per_job} is larger than "
                f"max_iteration_per_job {self.max_iteration_per_job}: swap or fix them")
        _name("execution_queue", self.execution_queue, "name a queue, e.g. default")
        limits.check_name("queue", self.execution_queue, "execution_queue")
        if self.spawn_project is not None:
            _name("spawn_project", self.spawn_project, "name a project, or leave it out to "
                  "put the jobs in the base task's project")
            limits.check_name("project", self.spawn_project, "spawn_project")

    def check_parameters(self, base_parameters: Mapping[str, Any]) -> None:
        """Every tuned name must be a parameter of the base task: a clone given a name
        its script never reads tunes nothing, silently. Unchecked when the base task
        records no parameters (a script registered before its first run) or with
        ``allow_new_parameters``."""
        if self.allow_new_parameters or not base_parameters:
            return
        known = sorted(base_parameters)
        for name, key in self.tuned_keys():
            if key not in base_parameters:
                close = close_names(key, known)
                hint = (f"did you mean {' or '.join(close)}?" if close else
                        f"it has {', '.join(limits.short(k, 40) for k in known[:8])}"
                        f"{' ...' if len(known) > 8 else ''}")
                raise ConfigError(f"hyper-parameter {name!r} is not a parameter of the base "
                                  f"task ({key}): {hint} (allow_new_parameters: true tunes "
                                  "it anyway)")

    def tuned_keys(self) -> list[tuple[str, str]]:
        """(name as given, qualified key) of every tuned parameter."""
        return [(n, P.qualify(n)) for p in self.hyper_parameters for n in p.names]

    def to_dict(self) -> dict[str, Any]:
        """JSON for the store. Strategy arguments that are not JSON (an Optuna sampler or
        pruner instance) are pickled: the store is as trusted as the scripts it runs."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["hyper_parameters"] = [p.to_dict() for p in self.hyper_parameters]
        data["objectives"] = [asdict(o) for o in self.objectives]
        data["strategy_kwargs"] = {k: _to_json(k, v) for k, v in self.strategy_kwargs.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimizerConfig:
        data = dict(data)
        data["hyper_parameters"] = [Parameter.from_dict(p) for p in data["hyper_parameters"]]
        data["objectives"] = [Objective(**o) for o in data["objectives"]]
        data["strategy_kwargs"] = {k: _from_json(v)
                                   for k, v in data.get("strategy_kwargs", {}).items()}
        return cls(**data)


def close_names(key: str, known: Sequence[str]) -> list[str]:
    """The names in ``known`` close to ``key``'s own name (the section prefix would make
    every name alike), excluding ``key`` itself."""
    leaves = difflib.get_close_matches(key.rpartition("/")[2],
                                       {k.rpartition("/")[2] for k in known}, n=3,
                                       cutoff=0.75)
    return [k for k in known if k.rpartition("/")[2] in leaves and k != key]


_PICKLED = "__pickled__"


def _to_json(name: str, value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        pass
    try:
        return {_PICKLED: pickle_text.to_text(value)}
    except Exception as exc:
        raise ConfigError(f"strategy argument {name}={value!r} can be neither saved as JSON "
                          f"nor pickled ({exc}): pass plain values") from None


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {_PICKLED}:
        return pickle_text.from_text(value[_PICKLED])
    return value


def objectives_from(
    title: str | Sequence[str] | None, series: str | Sequence[str] | None,
    sign: str | Sequence[str],
) -> list[Objective]:
    """ClearML's objective arguments (one value each, or lists of equal length)."""
    if title is None or series is None:
        return []
    titles = [title] if isinstance(title, str) else list(title)
    series_ = [series] if isinstance(series, str) else list(series)
    signs = [sign] * len(titles) if isinstance(sign, str) else list(sign)
    if not len(titles) == len(series_) == len(signs):
        raise ConfigError("objective_metric_title, _series and _sign must be lists of the "
                          "same length")
    return [Objective(t, s, g) for t, s, g in zip(titles, series_, signs, strict=True)]


def _positive_int(name: str, value: Any, *, allow_zero: bool = False, optional: bool = True,
                  unset: str = "") -> None:
    """An integer of at least 1 (0 with ``allow_zero``) or, when ``optional``, None;
    ``unset`` says what leaving it out means."""
    if value is None and optional:
        return
    least = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        kind = "non-negative" if allow_zero else "positive"
        fix = f"give {least} or more" + (
            f", or leave it out{' ' + unset if unset else ''}" if optional else "")
        raise ConfigError(f"{name} must be a {kind} integer, not {limits.short(value)}: {fix}")
    if value > defaults.MAX_COUNT:
        raise ConfigError(f"{name} {limits.short(value)} is more than {defaults.MAX_COUNT} "
                          f"(the store keeps counts in 32 bits): give {least} to "
                          f"{defaults.MAX_COUNT}")


def _name(name: str, value: Any, fix: str) -> None:
    """A non-empty string (a queue or project name)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, not {limits.short(value)}: "
                          f"{fix}")
