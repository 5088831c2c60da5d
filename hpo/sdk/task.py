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
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from hpo import defaults, relations
from hpo import typed_params as P
from hpo.errors import ConfigError
from hpo.lifecycle import Status, TaskType
from hpo.sdk import argparse_hook
from hpo.sdk import configuration as cfg
from hpo.sdk.logger import Logger
from hpo.sdk.tracking import ConnectedWatch

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
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

        attempt: int
        tags: list[str]
        comment: str | None

        def parameters(self) -> dict[str, Any]: ...
        def record_parameters(self, values: dict[str, Any]) -> None: ...
        def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None: ...
        def report_text(self, text: str) -> None: ...
        def log_line(self, text: str) -> None: ...
        def report(self, report: dict[str, Any]) -> None: ...
        def record_artifact(self, entry: dict[str, Any]) -> None: ...
        def artifacts(self) -> list[dict[str, Any]]: ...
        def set_fields(self, fields: dict[str, Any]) -> None: ...
        def flush(self) -> None: ...
        def close(self, status: str | None = None, message: str | None = None) -> None: ...


class Task:
    """One task: a template, a clone, or the script running now."""

    TaskTypes = TaskType
    _current: Task | None = None

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend
        self._logger = Logger(backend)
        self._read: set[str] = set()  # parameter keys the script connected, asked for, wrote
        self._watch = ConnectedWatch(self._write_parameters)
        self._registered: dict[str, tuple[Any, dict[str, Any] | None]] = {}

    # ----- the running script -------------------------------------------------------

    @classmethod
    def init(
        cls,
        project_name: str | None = None,
        task_name: str | None = None,
        task_type: TaskType | str = TaskType.training,
        tags: Sequence[str] | None = None,
        reuse_last_task_id: bool | str = True,
        continue_last_task: bool | str | int = False,
        output_uri: str | bool | None = None,
        auto_connect_arg_parser: bool = True,
        **_clearml_options: Any,
    ) -> Task:
        """The task of this process, with ClearML's parameters in ClearML's order. Under
        an agent the arguments are ignored: the task is the one the agent runs. Calling
        it again returns the same task. ``continue_last_task``, ``output_uri`` and the
        other ClearML options (frameworks, streams, monitoring) are accepted and change
        nothing (docs/clearml.md)."""
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
        self._finish(None, None)
        if Task._current is self:
            Task._current = None
            Logger._current = None
            argparse_hook.uninstall()

    def mark_completed(self, ignore_errors: bool = True, status_message: str | None = None,
                       force: bool = False) -> None:
        """End this script's run as completed (a run by hand; under an agent the agent
        records the outcome from the exit code)."""
        self._finish(Status.completed.value, status_message)

    def mark_failed(self, ignore_errors: bool = True, status_reason: str | None = None,
                    status_message: str | None = None, force: bool = False) -> None:
        self._finish(Status.failed.value, status_message or status_reason)

    def mark_stopped(self, force: bool = False, status_message: str | None = None) -> None:
        self._finish(Status.stopped.value, status_message)

    def _finish(self, status: str | None, message: str | None) -> None:
        """The last look at connected dicts and registered artifacts, then the end."""
        self._watch.stop()
        self._upload_registered()
        self._tag_unread()
        self._backend.close(status, message)

    def _write_parameters(self, values: Mapping[str, Any]) -> None:
        """Record parameters the script set: it knows them, so none of them is unread."""
        self._read.update(values)
        self._backend.record_parameters(dict(values))

    def _tag_unread(self) -> None:
        """Under an agent: tag the run with the parameters it was given but never read
        (``relations.UNREAD``), in the sections it did connect, so that a tuned name
        with a typo (``alpah`` beside the ``alpha`` the script reads) is seen at the
        first job, not after the whole budget. A section the script never connected is
        not judged (it may read its values another way)."""
        if not self._backend.overrides or not self._read:
            return
        sections = {key.partition("/")[0] for key in self._read}
        unread = sorted(k for k in self._backend.parameters()
                        if k.partition("/")[0] in sections - _RESERVED and k not in self._read)
        if unread:
            print(f"hpo: parameter(s) set on this task that the script never read: "
                  f"{', '.join(unread[:10])}", file=sys.stderr)
            self._backend.set_fields({"add_tags": [
                relations.tag(relations.UNREAD, k) for k in unread[:MAX_UNREAD_TAGS]]})

    @staticmethod
    def running_locally() -> bool:
        """True when run by hand, False under an agent."""
        return not os.environ.get(defaults.ENV_TASK_ID)

    # ----- identity -------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._backend.task_id

    @property
    def name(self) -> str:
        return self._backend.name

    @name.setter
    def name(self, value: str) -> None:
        self.set_name(value)

    def set_name(self, name: str) -> None:
        from hpo.limits import check_name

        self._backend.set_fields({"name": check_name("task name", name, "name")})

    def get_tags(self) -> list[str]:
        return list(self._backend.tags)

    def add_tags(self, tags: Sequence[str] | str) -> None:
        """Add tags (one string or several) to those the task has."""
        self._backend.set_fields({"add_tags": _tag_list(tags)})

    def set_tags(self, tags: Sequence[str] | str) -> None:
        """Replace the task's tags."""
        self._backend.set_fields({"tags": _tag_list(tags)})

    @property
    def comment(self) -> str:
        return self._backend.comment or ""

    @comment.setter
    def comment(self, value: str) -> None:
        self.set_comment(value)

    def set_comment(self, comment: str) -> None:
        self._backend.set_fields({"comment": str(comment)})

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

    if not TYPE_CHECKING:  # hidden from mypy: every other name stays an error there
        def __getattr__(self, name: str) -> Any:
            """A ClearML call hpo leaves out says why (hpo.sdk.unsupported)."""
            if name.startswith("_"):
                raise AttributeError(name)
            from hpo.sdk import unsupported

            raise unsupported.refuse("Task", name)

    # ----- parameters -----------------------------------------------------------------

    def connect(self, mutable: Any, name: str | None = None,
                ignore_remote_overrides: bool = False) -> Any:
        """Bind a dict, an argparse Namespace or a plain object to section ``name``
        (``General`` for dicts and objects, ``Args`` for a Namespace). Under an agent the
        stored values replace the object's, converted to the type of the value they
        replace (unless ``ignore_remote_overrides``); run by hand the object's values are
        recorded. Returns the object; a dict's later changes are recorded too (within
        ``SDK_FLUSH_PERIOD_S``)."""
        obj, override = mutable, not ignore_remote_overrides
        if name is not None and P.qualify(f"{name}/x").split("/")[0] in _RESERVED:
            raise ConfigError(f"task.connect(name={name!r}): section {name!r} is where hpo "
                              "keeps configuration objects and user properties; use "
                              "connect_configuration() / set_user_properties() or another name")
        if isinstance(obj, argparse.Namespace):
            self._bind(vars(obj), name or P.ARGS_SECTION, override)
        elif isinstance(obj, MutableMapping):
            section = name or P.DEFAULT_SECTION
            recorded = self._bind(obj, section, override)
            # Later changes are recorded too, as ClearML does for a connected dict.
            self._watch.watch(lambda: P.flatten(obj, section), recorded)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            self._bind(vars(obj), name or P.DEFAULT_SECTION, override)
        else:
            raise ConfigError(
                f"task.connect() takes a dict, an argparse Namespace or an object with "
                f"attributes, not {type(obj).__name__}")
        return obj

    def get_parameters(self, backwards_compatibility: bool = True, cast: bool = False
                       ) -> dict[str, Any]:
        """All parameters as ``{"Section/name": value}``, always with their types (as
        ClearML's ``cast=True``), not the configuration objects
        (``get_configuration_object``)."""
        self._watch.sync()  # a change to a connected dict a moment ago is read back too
        prefix = f"{cfg.CONFIGURATION_SECTION}/"
        parameters = {k: v for k, v in self._backend.parameters().items()
                      if not k.startswith(prefix)}
        self._read.update(parameters)  # the script has them all: none is unread
        return parameters

    def get_parameters_as_dict(self, cast: bool = False) -> dict[str, dict[str, Any]]:
        """``{"Section": {"name": value}}``."""
        out: dict[str, dict[str, Any]] = {}
        for key, value in self.get_parameters().items():
            section, name = P.split(key)
            out.setdefault(section, {})[name] = value
        return out

    def get_parameter(self, name: str, default: Any = None, cast: bool = False) -> Any:
        key = P.qualify(name)
        self._read.add(key)
        self._watch.sync()
        return self._backend.parameters().get(key, default)

    def set_parameters(self, *args: Mapping[str, Any], **kwargs: Any) -> None:
        """Record parameters (``Section/name`` keys; a bare name goes to ``General``)."""
        values: dict[str, Any] = {}
        for mapping in args:
            values.update(mapping)
        values.update(kwargs)
        self._write_parameters(
            {P.qualify(k): P.to_json_value(v) for k, v in values.items()})

    def set_parameter(self, name: str, value: Any, description: str | None = None,
                      value_type: Any = None) -> None:
        """Record one parameter (its type is its value's; descriptions are not kept)."""
        self.set_parameters({name: value})

    def _bind(self, target: MutableMapping[str, Any], section: str, override: bool = True
              ) -> dict[str, Any]:
        flat = P.flatten(target, section)
        if self._backend.overrides and override:
            stored = self._backend.parameters()
            for key, value in flat.items():
                if key in stored:
                    flat[key] = P.coerce(stored[key], value)
                    _assign(target, key[len(section) + 1:].split("/"), flat[key])
        self._write_parameters(flat)
        return flat

    # ----- configuration objects and user properties -----------------------------------

    def connect_configuration(self, configuration: dict[str, Any] | str | Path,
                              name: str | None = None, description: str | None = None,
                              ignore_remote_overrides: bool = False
                              ) -> dict[str, Any] | str | Path:
        """Record a configuration: a dict, or a file (a path). Returns, as ClearML: for
        a dict, the dict (under an agent its contents replaced by the task's stored
        configuration, which a clone may have edited; later changes are recorded); for a
        path, a local file holding the configuration (under an agent a new file with the
        stored text). ``description`` is not kept (docs/clearml.md)."""
        label = name or cfg.DEFAULT_NAME
        key = cfg.key(name)
        stored = self._backend.parameters().get(key) if self._backend.overrides else None
        if stored is not None and not ignore_remote_overrides:
            if isinstance(configuration, str | Path):
                return cfg.override_file(configuration, stored, label)
            if isinstance(configuration, dict):
                cfg.override_dict(configuration, stored, label)
        value = cfg.recorded(configuration, label)
        self._write_parameters({key: value})
        if isinstance(configuration, dict):
            target = configuration
            self._watch.watch(lambda: {key: P.to_json_value(target)}, {key: value})
        return configuration

    def get_configuration_object(self, name: str) -> str | None:
        """A configuration as text (a dict as JSON); None when the task has none."""
        return cfg.as_text(self._backend.parameters().get(cfg.key(name)))

    def get_configuration_object_as_dict(self, name: str) -> dict[str, Any] | None:
        return cfg.as_dict(
            self._backend.parameters().get(cfg.key(name)), name)

    def set_configuration_object(self, name: str, config_text: str | None = None,
                                 description: str | None = None, config_type: str | None = None,
                                 config_dict: dict[str, Any] | None = None) -> None:
        """Set a configuration (text or a dict): on a clone, what its run will get."""
        if (config_text is None) == (config_dict is None):
            raise ConfigError("set_configuration_object needs config_text or config_dict")
        value = P.to_json_value(config_dict) if config_dict is not None else str(config_text)
        self._write_parameters({cfg.key(name): value})

    def set_user_properties(self, *iterables: Any, **properties: Any) -> bool:
        """Set user properties: ``set_user_properties(backbone="resnet")``, dicts of
        name to value, ``{"name": ..., "value": ...}`` dicts, (name, value) tuples."""
        self._write_parameters(cfg.properties_from(iterables, properties))
        return True

    def get_user_properties(self, value_only: bool = False) -> dict[str, Any]:
        """``{name: {"name", "value", "description", "type"}}``, or ``{name: value}``."""
        found = P.section_of(self._backend.parameters(), cfg.PROPERTIES_SECTION)
        if value_only:
            return found
        return {k: {"name": k, "value": v, "description": "", "type": P.type_name(v)}
                for k, v in found.items()}

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

    def flush(self, wait_for_uploads: bool = False) -> bool:
        self._watch.sync()
        self._upload_registered()
        self._backend.flush()
        return True

    # ----- artifacts ------------------------------------------------------------------

    def upload_artifact(self, name: str, artifact_object: Any,
                        metadata: dict[str, Any] | None = None,
                        delete_after_upload: bool = False, auto_pickle: bool | None = None,
                        preview: Any = None, wait_on_upload: bool = False,
                        extension_name: str | None = None, serialization_function: Any = None,
                        retries: int = 0, sort_keys: bool = True) -> bool:
        """Keep ``artifact_object`` under ``name`` (a new upload of a name replaces it):
        a file or folder (zipped) by path, a dict (JSON), a numpy array (.npz), a pandas
        DataFrame (.csv.gz), a string (text), anything else pickled. Written at once
        (``wait_on_upload`` is always true); ``extension_name`` is not supported."""
        from hpo.limits import check_name
        from hpo.sdk import artifacts

        check_name("metric", name, "artifact name")
        obj = artifact_object
        if serialization_function is not None:
            obj = serialization_function(artifact_object)
        entry = artifacts.serialize(self.id, self._backend.attempt, name, obj,
                                    metadata=metadata, preview=preview, auto_pickle=auto_pickle)
        self._backend.record_artifact(entry)
        if delete_after_upload and isinstance(artifact_object, str | Path):
            target = Path(artifact_object)
            if target.is_file():
                target.unlink()
        return True

    def register_artifact(self, name: str, artifact: Any, metadata: dict[str, Any] | None = None,
                          uniqueness_columns: Any = True) -> None:
        """Watch a pandas DataFrame: uploaded as artifact ``name`` on every
        ``task.flush()`` and when the task ends (ClearML also syncs it in the background
        every few minutes; hpo does not)."""
        if not (hasattr(artifact, "to_csv") and hasattr(artifact, "columns")):
            raise ValueError("register_artifact takes a pandas DataFrame (upload_artifact "
                             "takes anything)")
        self._registered[name] = (artifact, metadata)

    def unregister_artifact(self, name: str) -> None:
        self._registered.pop(name, None)

    def get_registered_artifacts(self) -> dict[str, Any]:
        return {name: obj for name, (obj, _) in self._registered.items()}

    def _upload_registered(self) -> None:
        for name, (obj, metadata) in list(self._registered.items()):
            try:
                self.upload_artifact(name, obj, metadata=metadata)
            except Exception as exc:  # the run's end must not fail on a watched object
                print(f"hpo: registered artifact {name!r} not uploaded: {exc}",
                      file=sys.stderr, flush=True)

    @property
    def artifacts(self) -> Mapping[str, Any]:
        """``{name: Artifact}``, read-only: ``task.artifacts["x"].get()``. Under an agent,
        those this run uploaded."""
        from types import MappingProxyType

        from hpo.sdk.artifacts import Artifact

        return MappingProxyType({e["name"]: Artifact(e) for e in self._backend.artifacts()})

    # ----- tasks in the store -------------------------------------------------------

    @classmethod
    def get_task(
        cls,
        task_id: str | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
        tags: Sequence[str] | None = None,
        allow_archived: bool = True,
        task_filter: dict[str, Any] | None = None,
    ) -> Task:
        """A task by id, or the newest one with this project and name (and these tags
        and ``task_filter``, as in ``get_tasks``)."""
        from hpo.errors import TaskNotFound
        from hpo.sdk import task_query
        from hpo.sdk.store_backend import StoreBackend
        from hpo.store import open_store

        store = open_store()
        if task_id:
            record = store.get_task(task_id)
        elif task_name:
            found = task_query.find(store, None, project_name, None, tags, task_filter or {},
                                    exact_name=task_name)
            if not found:
                where = f"project {project_name!r}, " if project_name else ""
                raise TaskNotFound(f"no task named {task_name!r} ({where}`hpo task list`)")
            record = found[0]
        else:
            raise ConfigError("Task.get_task needs task_id, or task_name (and project_name)")
        return cls(StoreBackend(store, record))

    @classmethod
    def get_tasks(
        cls,
        task_ids: Sequence[str] | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
        tags: Sequence[str] | None = None,
        allow_archived: bool = True,
        task_filter: dict[str, Any] | None = None,
    ) -> list[Task]:
        """Tasks by ids, or matching ClearML's filters, newest first: ``task_name`` is a
        regular expression searched in the name (a part matches); ``tags`` match any of
        them (``"-tag"`` excludes one, ``"__$all"`` first requires all); ``task_filter``
        takes ``status``, ``type``, ``parent``, ``tags`` and ``order_by``. hpo archives
        nothing, so ``allow_archived`` changes nothing."""
        from hpo.sdk import task_query
        from hpo.sdk.store_backend import StoreBackend
        from hpo.store import open_store

        store = open_store()
        records = task_query.find(store, task_ids, project_name, task_name, tags,
                                  task_filter or {})
        return [cls(StoreBackend(store, record)) for record in records]

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
    def enqueue(cls, task: Task | str, queue_name: str | None = None,
                queue_id: str | None = None, force: bool = False) -> Task:
        """Put a created task on an execution queue for an agent to run (hpo's queues
        are their names: ``queue_id`` is one too). ``force``: a finished task is reset
        (its results cleared) and enqueued."""
        from hpo.limits import check_name
        from hpo.queue import dispatch
        from hpo.queue.app import make_app
        from hpo.sdk.store_backend import StoreBackend
        from hpo.store import open_store

        queue_name = queue_name or queue_id or defaults.DEFAULT_QUEUE
        check_name("queue", queue_name, "queue_name")
        store = open_store()
        task_id = task.id if isinstance(task, Task) else task
        if force and store.get_task(task_id).status.is_final:
            store.reset(task_id)
        record = dispatch.enqueue(store, make_app(), task_id, queue_name)
        return cls(StoreBackend(store, record))

    @classmethod
    def dequeue(cls, task: Task | str) -> None:
        from hpo.store import open_store

        open_store().dequeue(task.id if isinstance(task, Task) else task)

    def execute_remotely(self, queue_name: str | None = None, clone: bool = False,
                         exit_process: bool = True) -> Task | None:
        """Run this task on an agent instead of here, as ClearML does. By hand: with
        ``clone`` False the task itself goes back to created (its reports so far
        cleared, its parameters kept) and onto ``queue_name``, and this process exits;
        with ``clone`` True a clone is enqueued, and this process exits only if
        ``exit_process`` (else the clone is returned). No ``queue_name``: nothing is
        enqueued (the task is left created). Under an agent: nothing happens (None)."""
        if self._backend.overrides:
            return None  # an agent runs it: this is the remote execution
        if Task._current is not self:
            raise ConfigError("execute_remotely() moves the task this script runs (the one "
                              "Task.init returned); to run another task, Task.enqueue it")
        from hpo.sdk.store_backend import StoreBackend

        assert isinstance(self._backend, StoreBackend)  # a run by hand writes the store
        if not clone and not exit_process:
            raise ValueError("execute_remotely(clone=False, exit_process=False) is not "
                             "supported: a task that enqueues itself must end this process")
        self.flush()
        target = Task.clone(self) if clone else None
        if target is None:
            store = self._backend.store
            self._watch.stop()
            self._backend.detach()
            store.set_status(self.id, Status.stopped, message="execute_remotely: sent to "
                             f"queue {queue_name}" if queue_name else "execute_remotely")
            store.reset(self.id)
        enqueued = self if target is None else target
        if queue_name:
            Task.enqueue(enqueued.id, queue_name)
            print(f"hpo: task {enqueued.id} queued on {queue_name}", file=sys.stderr,
                  flush=True)
        if exit_process:
            if Task._current is self and target is not None:
                self.close()
            Task._current, Logger._current = None, None
            sys.exit(0)
        return target

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


# Sections a script may not connect a dict to: hpo keeps its own objects there.
_RESERVED = frozenset({cfg.CONFIGURATION_SECTION, cfg.PROPERTIES_SECTION})
# The unread parameters a run is tagged with, at most: a few name the mistake.
MAX_UNREAD_TAGS = 10


def _tag_list(tags: Sequence[str] | str) -> list[str]:
    listed = [tags] if isinstance(tags, str) else [str(t) for t in tags]
    return list(dict.fromkeys(listed))


def _assign(target: MutableMapping[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _install_exit_hooks(task: Task) -> None:
    """Mark a script run by hand failed on an uncaught exception, completed otherwise."""
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        # The traceback first, so that the task's log (the captured stderr) keeps it.
        previous(kind, exc, tb)
        if Task._current is task:
            task.mark_failed(status_message=f"{kind.__name__}: {exc}")

    sys.excepthook = excepthook
    atexit.register(task.close)
