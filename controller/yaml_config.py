"""``hpo.yaml``: an optimization described in a file, read into the arguments of
:class:`~hpo.controller.optimizer.HyperParameterOptimizer`.

The fields have the names of the Python API (``max_number_of_concurrent_tasks``,
``total_max_jobs``, ...), plus:

* ``base_task``: a task id; ``{id: ID}``; ``{project: P, name: N}`` (the newest task of
  that project and name); or ``{script: train.py, project: P, name: N, args: [...],
  working_dir: DIR, python: PATH}``, which registers the script as a template task (like
  ``hpo task create``) or reuses the one registered before with the same project, name
  and script. Paths are relative to the folder of the yaml file.
* ``hyper_parameters``: a list of ranges in ``Parameter.from_dict``'s format, e.g.
  ``{type: log_uniform, name: alpha, min_value: -6, max_value: -2}``.
* ``objective``: ``{title: T, series: S, sign: max}`` or a list of them.
* ``strategy``: a registered name (``random``, ``grid``) or a dotted path to a
  ``SearchStrategy`` subclass; ``strategy_kwargs``: passed to it (``{seed: 1}``).
* ``preload``: modules (a list, or one comma-separated string) the agents' warm slots
  import once before forking each job (``hpo-agent --preload``), e.g.
  ``[sklearn.ensemble, scipy.optimize]``: recorded in the base task's script, so every
  job carries it and any agent serving one preloads them (the local agents of
  ``--local-agents`` too) after its first job.

Everything is checked before anything is created or launched; every mistake is one
:class:`~hpo.errors.ConfigError` line naming the field and the fix.
"""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from hpo import defaults, limits
from hpo.errors import ConfigError, HpoError
from hpo.lifecycle import TaskType
from hpo.limits import short
from hpo.optimization.objective import SIGNS, Objective
from hpo.records import TaskRecord
from hpo.space.ranges import Parameter
from hpo.store import Store
from hpo.strategies.base import resolve

DEFAULT_FILE = "hpo.yaml"

#: Fields passed on to HyperParameterOptimizer under the same name.
PLAIN_FIELDS = (
    "max_number_of_concurrent_tasks", "execution_queue", "optimization_time_limit",
    "compute_time_limit", "total_max_jobs", "min_iteration_per_job", "max_iteration_per_job",
    "time_limit_per_job", "save_top_k_tasks_only", "spawn_project", "fail_fast",
    "allow_new_parameters",
)
KNOWN_FIELDS = ("base_task", "hyper_parameters", "objective", "strategy", "strategy_kwargs",
                "preload", *PLAIN_FIELDS)

_BASE_TASK_FORMS = ("a task id", "{id: ID}", "{project: P, name: N}",
                    "{script: train.py, project: P, name: N, args: [...], working_dir: DIR}")
_SCRIPT_KEYS = ("script", "project", "name", "args", "working_dir", "python")


def load_optimizer_arguments(path: str | Path, store: Store) -> dict[str, Any]:
    """The keyword arguments of ``HyperParameterOptimizer`` that ``path`` describes
    (``store`` included). Registers the base script as a template task when the file
    names one (the only write, done after every other check has passed)."""
    path = limits.check_path("config file", path)
    data = read_yaml(path)
    where = path.name

    def error(message: str) -> ConfigError:
        return ConfigError(f"{where}: {message}")

    unknown = [k for k in data if k not in KNOWN_FIELDS]
    if unknown:
        raise error(f"unknown field {short(unknown[0])}: the fields are "
                    f"{', '.join(KNOWN_FIELDS)}")
    try:
        objectives = _objectives(data.get("objective"))
        hyper_parameters = _hyper_parameters(data.get("hyper_parameters"))
        # Checked with the rest by OptimizerConfig.validate in _dry_run: one validator,
        # the same messages as HyperParameterOptimizer(...) gives.
        plain = {name: data[name] for name in PLAIN_FIELDS if name in data}
        strategy, strategy_kwargs = _strategy(
            _beside(data.get("strategy", "random"), path.resolve().parent),
            data.get("strategy_kwargs"))
        _dry_run(hyper_parameters, objectives, strategy, strategy_kwargs, plain)
        preload = _preload(data.get("preload"))
        if "base_task" not in data:
            raise ConfigError(f"base_task: missing: give one of {'; '.join(_BASE_TASK_FORMS)}")
        base_task_id = _base_task(data["base_task"], path.resolve().parent, store)
        if preload is not None:
            _record_preload(store, base_task_id, preload)
    except ConfigError as exc:
        raise error(str(exc)) from None
    return {
        "base_task_id": base_task_id,
        "hyper_parameters": hyper_parameters,
        "objective_metric_title": [o.title for o in objectives],
        "objective_metric_series": [o.series for o in objectives],
        "objective_metric_sign": [o.sign for o in objectives],
        "optimizer_class": strategy,
        **plain,
        "store": store,
        **strategy_kwargs,
    }


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a yaml file; a one-line ConfigError for a missing file or
    bad YAML."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}: give the path of an hpo.yaml, "
                          "e.g. hpo-controller start examples/digits/hpo.yaml")
    try:
        size = path.stat().st_size
        if size > defaults.MAX_YAML_BYTES:
            raise ConfigError(f"{path.name} is {size} bytes: a settings file is at most "
                              f"{defaults.MAX_YAML_BYTES} bytes, is this the right file?")
        # SafeLoader's resolver and constructors (only plain data, as safe_load), with
        # the limits of _LimitedLoader (depth, nodes after aliases) checked as it composes.
        loader = _LimitedLoader(path.read_text(encoding="utf-8"), path.name)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path.name}: not valid YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:  # a constructor's: a date like 2024-13-45, a 5,000-digit int
        reason = str(exc).split(";")[0][:120]
        raise ConfigError(f"{path.name}: a value cannot be read ({reason}): fix or quote it"
                          ) from None
    if data is None:
        raise ConfigError(f"{path.name} is empty: give at least base_task, hyper_parameters "
                          "and objective")
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: the top level must be a mapping of fields "
                          f"({', '.join(KNOWN_FIELDS)}), not a {type(data).__name__}")
    return data


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that refuses, while it composes, a document nested deeper than
    MAX_YAML_DEPTH or holding more than MAX_YAML_NODES nodes once aliases are expanded
    (an alias counts as the whole node it repeats: a billion laughs is caught at its
    first levels), and an alias inside the node it names (a cycle)."""

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self._file = name
        self._depth = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded
        self._open: set[str] = set()  # anchors being composed: an alias to one is a cycle

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open:
                raise ConfigError(f"{self._file}: the alias *{event.anchor} is used inside "
                                  "the node it names (a cycle): repeat the values instead")
            node = super().compose_node(parent, index)
            self._count(self._sizes.get(id(node), 1))
            return node
        self._depth += 1
        if self._depth > defaults.MAX_YAML_DEPTH:
            raise ConfigError(f"{self._file}: nested more than {defaults.MAX_YAML_DEPTH} "
                              "levels deep: a settings file needs a few; flatten it")
        before = self._expanded
        anchor = getattr(self.peek_event(), "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor)
        self._count(1)
        self._sizes[id(node)] = self._expanded - before
        return node

    def _count(self, nodes: int) -> None:
        self._expanded += nodes
        if self._expanded > defaults.MAX_YAML_NODES:
            raise ConfigError(f"{self._file}: more than {defaults.MAX_YAML_NODES} values once "
                              "its aliases (*name) are expanded: a settings file holds a "
                              "few hundred; write the values out, or fewer")


# ----- the fields ---------------------------------------------------------------------


def _objectives(value: Any) -> list[Objective]:
    example = "e.g. objective: {title: validation, series: accuracy, sign: max}"
    if value is None:
        raise ConfigError(f"objective: missing: give the metric to optimize, {example}")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"objective: the list is empty: {example}")
    objectives = []
    for i, item in enumerate(items):
        label = "objective" if not isinstance(value, list) else f"objective[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{label}: must be a mapping with title, series and sign, "
                              f"{example}")
        unknown = sorted(set(item) - {"title", "series", "sign"})
        if unknown:
            raise ConfigError(f"{label}: unknown key {short(unknown[0])}: use title, series, sign")
        for key in ("title", "series"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ConfigError(f"{label}: give {key} (a metric's {key}, as the script "
                                  f"reports it), {example}")
        sign = item.get("sign", "min")
        if sign not in SIGNS:
            raise ConfigError(f"{label}: sign {short(sign)}: use one of {', '.join(SIGNS)}")
        objectives.append(Objective(item["title"], item["series"], sign))
    return objectives


def _hyper_parameters(value: Any) -> list[Parameter]:
    example = "e.g. - {type: uniform, name: lr, min_value: 0.001, max_value: 0.1}"
    if value is None:
        raise ConfigError(f"hyper_parameters: missing: give a list of ranges, {example}")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"hyper_parameters: must be a non-empty list of ranges, {example}")
    params = []
    for i, item in enumerate(value):
        named = isinstance(item, Mapping) and isinstance(item.get("name"), str)
        label = f"hyper_parameters[{i}]" + (f" ({short(item['name'])[1:-1]})" if named else "")
        try:
            params.append(Parameter.from_dict(item))
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None
    return params


def _beside(name: Any, folder: Path) -> Any:
    """``my_strategy.LocalSearch`` with ``my_strategy.py`` in the yaml's folder becomes
    ``/that/folder/my_strategy.py:LocalSearch``: it imports without PYTHONPATH, and the
    saved configuration still finds it on ``resume``."""
    if not isinstance(name, str) or "." not in name or ":" in name:
        return name
    module, _, attr = name.rpartition(".")
    candidate = folder / (module.replace(".", "/") + ".py")
    try:
        found = candidate.is_file()
    except (OSError, ValueError):  # a name too long for a file: no module of ours
        found = False
    return f"{candidate}:{attr}" if found else name


def _strategy(name: Any, kwargs: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"strategy: {short(name)}: give a registered name (random, grid) or a "
                          "dotted path to a SearchStrategy subclass")
    try:
        resolve(name)
    except ConfigError as exc:
        raise ConfigError(f"strategy: {exc}") from None
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError(f"strategy_kwargs: must be a mapping of argument names to values, "
                          f"e.g. {{seed: 1}}, not {short(kwargs)}")
    from hpo.controller.optimizer import HyperParameterOptimizer

    taken = set(inspect.signature(HyperParameterOptimizer.__init__).parameters)
    clash = sorted(set(kwargs) & taken)
    if clash:
        raise ConfigError(f"strategy_kwargs: {short(clash[0])} is an optimizer argument, not a "
                          "strategy's: set it as a top-level field instead")
    return name, dict(kwargs)


def _dry_run(hyper_parameters: list[Parameter], objectives: list[Objective], strategy: str,
             strategy_kwargs: dict[str, Any], plain: dict[str, Any]) -> None:
    """Check the settings and build the strategy once, as the controller will: so a
    mistake is reported now, before an optimizer task exists."""
    from hpo.controller.controller import make_strategy
    from hpo.optimization.config import OptimizerConfig

    try:
        config = OptimizerConfig(base_task_id="(checked later)",
                                 hyper_parameters=hyper_parameters, objectives=objectives,
                                 strategy=strategy, strategy_kwargs=strategy_kwargs, **plain)
    except TypeError as exc:  # cannot happen for known fields; kept as a safety net
        raise ConfigError(str(exc)) from None
    config.validate()
    cls = resolve(strategy)
    signature = inspect.signature(cls)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    from_optimizer = ("space", "objectives", "min_iteration_per_job", "max_iteration_per_job",
                      "total_max_jobs")
    own = [name for name, p in signature.parameters.items()
           if name not in from_optimizer and p.kind is not p.VAR_KEYWORD]
    for name in strategy_kwargs:
        if name in from_optimizer:
            raise ConfigError(f"strategy_kwargs: {short(name)} is set by the optimizer: set it as "
                              "a top-level field instead")
        if not takes_any and name not in own:
            raise ConfigError(f"strategy_kwargs: {cls.__name__} ({strategy}) has no argument "
                              f"{short(name)}: use {', '.join(own) or 'none'}")
    try:
        make_strategy(config)
    except ConfigError as exc:
        raise ConfigError(f"strategy: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"strategy_kwargs: {cls.__name__} does not take these arguments "
                          f"({exc}): fix or remove them") from None


def _preload(value: Any) -> list[str] | None:
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"preload: {short(value)}: give a list of module names, e.g. "
                          "[sklearn.ensemble, scipy.optimize]")
    names = [n.strip() for n in names if n.strip()]
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"preload: {short(name)} is not a module name: give dotted "
                              "names, e.g. sklearn.ensemble")
    return names


def _record_preload(store: Store, task_id: str, preload: list[str]) -> None:
    """The base task's script carries the list (its clones copy it)."""
    script = store.get_task(task_id).script
    if script is None:
        raise ConfigError("preload: the base task has no script to preload for")
    if (script.preload or []) != preload:
        store.update_task(task_id, script=replace(script, preload=preload or None))


def _base_task(value: Any, folder: Path, store: Store) -> str:
    forms = "; ".join(_BASE_TASK_FORMS)
    if isinstance(value, str) and value.strip():
        return _task_by_id(value, store)
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"base_task: {short(value)}: give one of {forms}")
    keys = set(value)
    if "id" in keys:
        if keys != {"id"}:
            raise ConfigError("base_task: give either id alone or project and name "
                              f"(and script), not {', '.join(sorted(keys))}")
        if not isinstance(value["id"], str) or not value["id"].strip():
            raise ConfigError(f"base_task: id {short(value['id'])} must be a task id string")
        return _task_by_id(value["id"], store)
    unknown = sorted(keys - set(_SCRIPT_KEYS))
    if unknown:
        raise ConfigError(f"base_task: unknown key {short(unknown[0])}: give one of {forms}")
    for key in ("project", "name"):
        if not isinstance(value.get(key), str) or not value[key].strip():
            raise ConfigError(f"base_task: give {key} (a string) with "
                              f"{'script' if 'script' in keys else 'project and name'}: "
                              f"one of {forms}")
    limits.check_name("project", value["project"], "base_task: project")
    limits.check_name("task name", value["name"], "base_task: name")
    if "script" not in keys:
        extra = sorted(keys - {"project", "name"})
        if extra:
            raise ConfigError(f"base_task: {short(extra[0])} needs script: give script too, or "
                              "only project and name")
        return _task_by_name(value["project"], value["name"], store)
    return _script_task(value, folder, store)


def _task_by_id(text: str, store: Store) -> str:
    try:
        return store.resolve_task_id(limits.check_task_id(text))
    except HpoError as exc:
        raise ConfigError(f"base_task: unknown base task {short(text)} ({exc})"
                          ) from None


def _templates(store: Store, project: str, name: str) -> list[TaskRecord]:
    """Tasks of that project and name that are not clones, newest first."""
    return [t for t in store.find_tasks(project=project, name=name, limit=100)
            if t.parent is None and t.cloned_from is None
            and t.type != TaskType.optimizer]


def _task_by_name(project: str, name: str, store: Store) -> str:
    found = _templates(store, project, name)
    if not found:
        raise ConfigError(f"base_task: unknown base task: no task named {short(name)} in project "
                          f"{short(project)}: run the script once by hand, or give its script "
                          "(base_task: {script: train.py, project: ..., name: ...})")
    return found[0].id


def _script_task(value: Mapping[str, Any], folder: Path, store: Store) -> str:
    from hpo.cli.task_cmd import script_info_for

    script = value["script"]
    if not isinstance(script, str) or not script.strip():
        raise ConfigError(f"base_task: script {short(script)} must be a path to a Python file")
    script_path = (folder / limits.check_path("base_task: script", script)).resolve()
    if not script_path.is_file():
        raise ConfigError(f"base_task: script not found: {script_path}: give a path relative "
                          "to the folder of the yaml file")
    args = value.get("args") or []
    if isinstance(args, str):
        args = shlex.split(args)
    if not isinstance(args, list) or any(isinstance(a, list | dict) for a in args):
        raise ConfigError(f"base_task: args must be a list of arguments, not {short(args)}")
    working_dir = folder / limits.check_path("base_task: working_dir",
                                             str(value.get("working_dir") or "."))
    if not working_dir.is_dir():
        raise ConfigError(f"base_task: working_dir not found: {working_dir}")
    python = value.get("python")
    if python is not None and not isinstance(python, str):
        raise ConfigError(f"base_task: python must be the path of an interpreter, not "
                          f"{short(python)}")
    info = script_info_for(script_path, working_dir, [str(a) for a in args], python)
    project, name = value["project"], value["name"]
    for task in _templates(store, project, name):
        if task.script is not None and task.script.entry_point == info.entry_point:
            if replace(task.script, preload=None) != info:  # new args, folder, python, commit
                store.update_task(task.id, script=info)
            return task.id
    task = store.create_task(project, name, type=TaskType.training, script=info,
                             comment=f"registered from {script} by hpo-controller")
    return task.id
