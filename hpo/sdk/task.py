"""``Task``: the training script's handle on hpo, shaped like ClearML's ``Task``.

Run by hand, ``Task.init`` registers the script in the store as a template task and
stores what it reports. Run by an agent (``HPO_TASK_ID`` set), it reads the overridden
parameters from the agent and reports through it, importing only the standard library.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Mapping, MutableMapping

from hpo import defaults
from hpo import typed_params as P
from hpo.errors import ConfigError
from hpo.lifecycle import Status, TaskType
from hpo.sdk import argparse_hook
from hpo.sdk.logger import Logger

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Protocol

    from hpo.records import TaskRecord

    class _Backend(Protocol):
        task_id: str
        project: str
        name: str
        type: str
        overrides: bool
        checkpoint_dir: Path
        resume_checkpoint: Path | None
        resume_iteration: int

        def parameters(self) -> dict[str, Any]: ...
        def record_parameters(self, values: dict[str, Any]) -> None: ...
        def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None: ...
        def report_text(self, text: str) -> None: ...
        def flush(self) -> None: ...
        def close(self, status: str | None = None, message: str | None = None) -> None: ...


class Task:
    """One task: a template, a clone, or the script running now."""

    TaskTypes = TaskType
    _current: Task | None = None

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend
        self._logger = Logger(backend)

    # ----- the running script -------------------------------------------------------

    @classmethod
    def init(
        cls,
        project_name: str | None = None,
        task_name: str | None = None,
        task_type: TaskType | str = TaskType.training,
        reuse_last_task_id: bool | str = True,
        tags: list[str] | None = None,
        auto_connect_arg_parser: bool = True,
        **_clearml_options: Any,
    ) -> Task:
        """The task of this process. Under an agent the arguments are ignored: the task
        is the one the agent runs. Calling it again returns the same task."""
        if cls._current is not None:
            return cls._current
        if os.environ.get(defaults.ENV_TASK_ID):
            from hpo.sdk.agent_backend import AgentBackend

            backend: _Backend = AgentBackend.from_env()
        else:
            if not project_name or not task_name:
                raise ConfigError("Task.init needs project_name and task_name")
            from hpo.limits import check_name

            check_name("project", project_name, "project_name")
            check_name("task name", task_name, "task_name")
            from hpo.sdk.store_backend import StoreBackend

            backend = StoreBackend.start_manual(
                project_name, task_name, TaskType(task_type).value, reuse_last_task_id,
                list(tags or []))
        task = cls(backend)
        cls._current = task
        Logger._current = task.get_logger()
        if auto_connect_arg_parser:
            argparse_hook.install(task._on_arguments_parsed)
        _install_exit_hooks(task)
        return task

    @classmethod
    def current_task(cls) -> Task | None:
        return cls._current

    def close(self) -> None:
        """Flush reports; a script run by hand is marked completed."""
        self._backend.close()
        if Task._current is self:
            Task._current = None
            Logger._current = None
            argparse_hook.uninstall()

    def mark_completed(self) -> None:
        self._backend.close(Status.completed.value)

    def mark_failed(self, status_message: str | None = None) -> None:
        self._backend.close(Status.failed.value, status_message)

    # ----- identity -------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._backend.task_id

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def project(self) -> str:
        return self._backend.project

    def get_project_name(self) -> str:
        return self._backend.project

    @property
    def task_type(self) -> str:
        return self._backend.type

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.project}/{self.name}>"

    # ----- parameters -----------------------------------------------------------------

    def connect(self, obj: Any, name: str | None = None) -> Any:
        """Bind a dict, an argparse Namespace or a plain object to section ``name``
        (``General`` for dicts and objects, ``Args`` for a Namespace). Under an agent the
        stored values replace the object's, converted to the type of the value they
        replace; run by hand the object's values are recorded. Returns ``obj``."""
        if isinstance(obj, argparse.Namespace):
            self._bind(vars(obj), name or P.ARGS_SECTION)
        elif isinstance(obj, MutableMapping):
            self._bind(obj, name or P.DEFAULT_SECTION)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            self._bind(vars(obj), name or P.DEFAULT_SECTION)
        else:
            raise ConfigError(
                f"task.connect() takes a dict, an argparse Namespace or an object with "
                f"attributes, not {type(obj).__name__}")
        return obj

    def get_parameters(self) -> dict[str, Any]:
        """All parameters as ``{"Section/name": value}``, with their types."""
        return self._backend.parameters()

    def get_parameters_as_dict(self) -> dict[str, dict[str, Any]]:
        """``{"Section": {"name": value}}``."""
        out: dict[str, dict[str, Any]] = {}
        for key, value in self.get_parameters().items():
            section, name = P.split(key)
            out.setdefault(section, {})[name] = value
        return out

    def get_parameter(self, name: str, default: Any = None) -> Any:
        return self.get_parameters().get(P.qualify(name), default)

    def set_parameters(self, *args: Mapping[str, Any], **kwargs: Any) -> None:
        """Record parameters (``Section/name`` keys; a bare name goes to ``General``)."""
        values: dict[str, Any] = {}
        for mapping in args:
            values.update(mapping)
        values.update(kwargs)
        self._backend.record_parameters(
            {P.qualify(k): P.to_json_value(v) for k, v in values.items()})

    def set_parameter(self, name: str, value: Any) -> None:
        self.set_parameters({name: value})

    def _bind(self, target: MutableMapping[str, Any], section: str) -> None:
        flat = P.flatten(target, section)
        if self._backend.overrides:
            stored = self._backend.parameters()
            for key, value in flat.items():
                if key in stored:
                    flat[key] = P.coerce(stored[key], value)
                    _assign(target, key[len(section) + 1:].split("/"), flat[key])
        self._backend.record_parameters(flat)

    def _on_arguments_parsed(self, parser: argparse.ArgumentParser,
                             ns: argparse.Namespace) -> None:
        values = argparse_hook.argument_values(parser, ns)
        self._bind(values, P.ARGS_SECTION)
        for dest, value in values.items():
            setattr(ns, dest, value)

    # ----- checkpoints ----------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        """The folder to save this task's state in (created on first use)."""
        folder = self._backend.checkpoint_dir
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def resume_checkpoint(self) -> Path | None:
        """The folder of the job this one continues (an ASHA promotion), or None."""
        return self._backend.resume_checkpoint

    @property
    def resume_iteration(self) -> int:
        """The iteration ``resume_checkpoint`` holds: continue after it. 0: start fresh."""
        return self._backend.resume_iteration

    def save_checkpoint(self, iteration: int) -> None:
        """Record that ``checkpoint_dir`` now holds a complete state at ``iteration``
        (call it after writing the files)."""
        from hpo.sdk import checkpoints

        checkpoints.save_record(self._backend.checkpoint_dir, iteration)

    # ----- reporting ------------------------------------------------------------------

    def get_logger(self) -> Logger:
        return self._logger

    def flush(self, wait_for_uploads: bool = False) -> None:
        self._backend.flush()

    # ----- tasks in the store -------------------------------------------------------

    @classmethod
    def get_task(
        cls,
        task_id: str | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
    ) -> Task:
        """A task by id, or the newest one with this project and name."""
        from hpo.errors import TaskNotFound
        from hpo.sdk.store_backend import StoreBackend
        from hpo.store import open_store

        store = open_store()
        if task_id:
            record = store.get_task(task_id)
        elif task_name:
            found = store.find_tasks(project=project_name, name=task_name, limit=1)
            if not found:
                where = f"project {project_name!r}, " if project_name else ""
                raise TaskNotFound(f"no task named {task_name!r} ({where}`hpo task list`)")
            record = found[0]
        else:
            raise ConfigError("Task.get_task needs task_id, or task_name (and project_name)")
        return cls(StoreBackend(store, record))

    @classmethod
    def clone(
        cls,
        source_task: Task | str,
        name: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
        project: str | None = None,
    ) -> Task:
        """A new draft (``created``) task with the source's script and parameters."""
        from hpo.limits import check_name
        from hpo.sdk.store_backend import StoreBackend
        from hpo.store import open_store

        if name is not None:
            check_name("task name", name, "name")
        if project is not None:
            check_name("project", project, "project")

        store = open_store()
        source_id = source_task.id if isinstance(source_task, Task) else source_task
        record = store.clone_task(source_id, name=name, parent=parent, project=project)
        if comment:
            record = store.update_task(record.id, comment=comment)
        return cls(StoreBackend(store, record))

    @classmethod
    def enqueue(cls, task: Task | str, queue_name: str = defaults.DEFAULT_QUEUE) -> Task:
        """Put a created task on an execution queue for an agent to run."""
        from hpo.limits import check_name
        from hpo.queue import dispatch
        from hpo.queue.app import make_app
        from hpo.sdk.store_backend import StoreBackend
        from hpo.store import open_store

        check_name("queue", queue_name, "queue_name")
        store = open_store()
        task_id = task.id if isinstance(task, Task) else task
        record = dispatch.enqueue(store, make_app(), task_id, queue_name)
        return cls(StoreBackend(store, record))

    @classmethod
    def dequeue(cls, task: Task | str) -> None:
        from hpo.store import open_store

        open_store().dequeue(task.id if isinstance(task, Task) else task)

    def abort(self) -> None:
        """Stop this task: at once when queued, through its agent when running."""
        from hpo.store import open_store

        open_store().request_stop(self.id, "aborted")

    def _record(self) -> TaskRecord:
        from hpo.sdk.store_backend import StoreBackend

        if not isinstance(self._backend, StoreBackend):
            raise ConfigError("this task runs under an agent: its record is in the agent's "
                              "store, read it with Task.get_task(task_id) from elsewhere")
        return self._backend.store.get_task(self.id)

    def get_status(self) -> str:
        return self._record().status.value

    @property
    def status(self) -> str:
        return self.get_status()

    def get_last_scalar_metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{title: {series: {"last": v, "min": v, "max": v}}}`` as ClearML gives it."""
        from hpo.sdk.store_backend import StoreBackend

        self._record()
        assert isinstance(self._backend, StoreBackend)
        out: dict[str, dict[str, dict[str, float]]] = {}
        for m in self._backend.store.scalar_summary([self.id]):
            out.setdefault(m.title, {})[m.series] = {"last": m.last, "min": m.min,
                                                     "max": m.max}
        return out


def _assign(target: MutableMapping[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _install_exit_hooks(task: Task) -> None:
    """Mark a script run by hand failed on an uncaught exception, completed otherwise."""
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        if Task._current is task:
            task.mark_failed(f"{kind.__name__}: {exc}")
        previous(kind, exc, tb)

    sys.excepthook = excepthook
    atexit.register(task.close)
