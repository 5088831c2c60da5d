"""``hpo task``: create, list, show and clone tasks; read their scalars, logs, reports
and artifacts."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from hpo import defaults, limits
from hpo import typed_params as P
from hpo.cli import common, output
from hpo.cli.common import add_output_options, add_store_option, store_from
from hpo.errors import ConfigError
from hpo.lifecycle import Status, TaskType
from hpo.records import ScriptInfo, TaskRecord
from hpo.sdk import configuration as cfg
from hpo.sdk import files
from hpo.sdk.reports import payload_of
from hpo.sdk.script_info import script_info
from hpo.store import ArtifactRecord, ReportRecord


def register(commands: Any) -> None:
    task = commands.add_parser("task", help="create, list, show and clone tasks",
                               description="Create, list, show and clone tasks.")
    sub = task.add_subparsers(dest="task_command", metavar="ACTION", required=True)

    def action(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        add_store_option(p)
        add_output_options(p)
        p.set_defaults(handler=handler)
        return p

    p = action("create", cmd_create, "register a script as a template task without running it")
    p.add_argument("--script", required=True, help="path of the training script")
    p.add_argument("--project", required=True, type=common.name("project"))
    p.add_argument("--name", required=True, type=common.name("task name"))
    p.add_argument("--type", default=TaskType.training.value,
                   choices=[t.value for t in TaskType])
    p.add_argument("--param", action="append", default=[], metavar="SECTION/NAME=VALUE",
                   help="a parameter, typed from its text: 3 int, 0.5 float, true bool, "
                   "null None, [1,2] list, else a string (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    p.add_argument("--working-dir", help="directory to run the script in (default: here)")
    p.add_argument("--python", help="interpreter for the script (default: this Python)")
    p.add_argument("--time-limit", type=common.positive_seconds, metavar="SECONDS",
                   help="stop the task after this long when an agent runs it")
    p.add_argument("--json", action="store_true", help="print the task as JSON")
    p.add_argument("--args", nargs=argparse.REMAINDER, default=[], metavar="ARG",
                   help="arguments for the script; everything after --args is passed on")

    p = action("list", cmd_list, "list tasks, newest first")
    p.add_argument("--project", type=common.name("project"))
    p.add_argument("--name", type=common.name("task name"))
    p.add_argument("--status", action="append", choices=[s.value for s in Status])
    p.add_argument("--tag")
    p.add_argument("--parent", type=common.task_id, help="only children of this task id")
    p.add_argument("--limit", type=common.positive_int, default=100)
    p.add_argument("--json", action="store_true")

    p = action("show", cmd_show, "a task's fields, parameters (with types) and last metrics")
    p.add_argument("id", type=common.task_id,
                   help="task id (a unique prefix of 4+ characters will do)")
    p.add_argument("--json", action="store_true")

    p = action("clone", cmd_clone, "a new draft task with the source's script and parameters")
    p.add_argument("id", type=common.task_id)
    p.add_argument("--name", type=common.name("task name"))
    p.add_argument("--project", type=common.name("project"))
    p.add_argument("--parent", type=common.task_id)
    p.add_argument("--param", action="append", default=[], metavar="SECTION/NAME=VALUE",
                   help="override a parameter; the text takes the type of the value it "
                   "replaces (repeatable)")
    p.add_argument("--json", action="store_true")

    p = action("enqueue", cmd_enqueue, "put a created task on an execution queue")
    p.add_argument("id", type=common.task_id)
    p.add_argument("--queue", default=defaults.DEFAULT_QUEUE, type=common.name("queue"),
                   help=f"execution queue (default: {defaults.DEFAULT_QUEUE})")
    common.add_broker_option(p)

    p = action("dequeue", cmd_dequeue, "take a queued task off its queue (back to created)")
    p.add_argument("id", type=common.task_id)

    p = action("abort", cmd_abort,
               "stop a task: a queued one at once, a running one through its agent")
    p.add_argument("id", type=common.task_id)

    p = action("scalars", cmd_scalars, "the scalars a task reported")
    p.add_argument("id", type=common.task_id)
    p.add_argument("--title")
    p.add_argument("--series")
    p.add_argument("--json", action="store_true")

    p = action("artifacts", cmd_artifacts, "the artifacts a task uploaded")
    p.add_argument("id", type=common.task_id)
    p.add_argument("--json", action="store_true")

    p = action("artifact", cmd_artifact, "copy one artifact's file out of the artifact store")
    p.add_argument("id", type=common.task_id)
    p.add_argument("name", help="the artifact's name (`hpo task artifacts ID` lists them)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="where to write it (a folder: the file keeps its stored name)")

    p = action("logs", cmd_logs, "a task's log lines")
    p.add_argument("id", type=common.task_id)
    p.add_argument("--tail", type=common.positive_int, metavar="N",
                   help="only the last N lines")
    p.add_argument("--json", action="store_true")


def script_info_for(script: str | Path, working_dir: str | Path | None = None,
                    argv: list[str] | None = None, python: str | None = None) -> ScriptInfo:
    """How to run ``script`` as a template task (``hpo task create``, ``base_task: {script:
    ...}`` in hpo.yaml): absolute paths, the interpreter, the git state."""
    path = limits.check_path("script", script)
    if not path.is_file():
        raise ConfigError(f"script not found: {script}: give the path of a Python file")
    directory = limits.check_path("working directory", working_dir or ".").resolve()
    if not directory.is_dir():
        raise ConfigError(f"working directory not found: {working_dir}")
    return script_info(path.resolve(), directory, list(argv or []), python or sys.executable)


def cmd_create(args: argparse.Namespace) -> int:
    info = script_info_for(args.script, args.working_dir, list(args.args), args.python)
    parameters = dict(_assignment(text) for text in args.param)
    store = store_from(args, create=True)
    task = store.create_task(args.project, args.name, type=args.type, script=info,
                             parameters=parameters, tags=args.tag, time_limit=args.time_limit)
    return _print_created(task, args.json)


def cmd_list(args: argparse.Namespace) -> int:
    store = store_from(args)
    parent = store.resolve_task_id(args.parent) if args.parent else None
    tasks = store.find_tasks(project=args.project, name=args.name, status=args.status,
                             tag=args.tag, parent=parent, limit=args.limit)
    if args.json:
        output.print_json(tasks)
        return 0
    output.table(
        f"{len(tasks)} task(s)",
        ["id", "project", "name", "type", "status", "queue", "created", "tags"],
        ([t.id, t.project, t.name, t.type, t.status, t.queue, output.when(t.created_at),
          ", ".join(t.tags) or None] for t in tasks),
        compact=True, drop=("tags", "queue", "type", "created", "project"),
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = store_from(args)
    task = store.get_task(store.resolve_task_id(args.id))
    metrics = store.scalar_summary([task.id])
    reports = store.task_reports(task.id)
    artifacts = store.task_artifacts(task.id)
    if args.json:
        output.print_json({"task": task, "metrics": metrics, "reports": reports,
                           "artifacts": artifacts})
        return 0
    script = task.script
    output.table(f"task {task.id}", ["field", "value"], [
        ("project", task.project), ("name", task.name), ("type", task.type),
        ("status", task.status), ("message", task.status_message),
        ("exit code", task.exit_code), ("parent", task.parent),
        ("cloned from", task.cloned_from), ("tags", task.tags or None),
        ("queue", task.queue), ("worker", task.worker), ("attempt", task.attempt),
        ("created", output.when(task.created_at)), ("started", output.when(task.started_at)),
        ("ended", output.when(task.ended_at)),
        ("duration", output.duration(task.started_at, task.ended_at)),
        ("time limit (s)", task.time_limit),
        ("script", script.entry_point if script else None),
        ("argv", script.argv if script else None),
        ("working dir", script.working_dir if script else None),
        ("interpreter", script.interpreter if script else None),
        ("repository", script.repository if script else None),
        ("commit", script.commit if script else None),
    ])
    kept_apart = (f"{cfg.CONFIGURATION_SECTION}/", f"{cfg.PROPERTIES_SECTION}/")
    output.table("parameters", ["name", "value", "type"],
                 ([k, json.dumps(v), P.type_name(v)]
                  for k, v in sorted(task.parameters.items()) if not k.startswith(kept_apart)))
    _show_kept_apart(task)
    output.table("last metrics", ["title", "series", "last", "min", "max", "iteration"],
                 ([m.title, m.series, m.last, m.min, m.max, m.last_iteration]
                  for m in metrics if m.title != SINGLE_VALUES))
    single = [(m.series, m.last) for m in metrics if m.title == SINGLE_VALUES]
    if single:
        output.table("single values", ["name", "value"], single)
    _show_reports(task.id, reports)
    if artifacts:
        _artifact_table(artifacts)
    return 0


# Logger.report_single_value keeps a value as a series of this title (ClearML's name).
SINGLE_VALUES = "Summary"


def _show_kept_apart(task: TaskRecord) -> None:
    """Configuration objects and user properties, each in its own table."""
    configs = P.section_of(task.parameters, cfg.CONFIGURATION_SECTION)
    if configs:
        output.table("configuration objects", ["name", "kind", "content"],
                     ([name, "dict" if isinstance(v, dict) else "text",
                       limits.short(json.dumps(v) if isinstance(v, dict) else v, 60)]
                      for name, v in sorted(configs.items())))
    props = P.section_of(task.parameters, cfg.PROPERTIES_SECTION)
    if props:
        output.table("user properties", ["name", "value"],
                     ([k, json.dumps(v)] for k, v in sorted(props.items())))


def _show_reports(task_id: str, reports: list[ReportRecord]) -> None:
    """A summary of the plots, tables and media: how many of each kind, each table's
    shape; the web view draws them."""
    if not reports:
        return
    counts: dict[str, int] = {}
    for r in reports:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    output.table("reports", ["kind", "count"], sorted(counts.items()))
    tables = []
    for r in reports:
        if r.kind == "table":
            try:
                payload = payload_of(r.kind, r.payload, r.file)
                shape = f"{len(payload['rows'])} x {len(payload['columns'])}"
            except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
                shape = f"unreadable ({exc})"
            tables.append((r.title, r.series, r.iteration, shape))
    if tables:
        output.table("tables", ["title", "series", "iteration", "rows x columns"], tables)
    files = [(r.kind, r.title, r.series, r.iteration, r.file or (r.payload or {}).get("url"))
             for r in reports if r.kind in ("image", "media")]
    if files:
        output.table("images and media", ["kind", "title", "series", "iteration", "file"],
                     files)


def _artifact_table(artifacts: list[ArtifactRecord]) -> None:
    output.table("artifacts", ["name", "type", "size", "preview", "metadata"],
                 ([a.name, a.type, a.size,
                   limits.short((a.preview or "").split("\n")[0], 40),
                   json.dumps(a.metadata) if a.metadata else None] for a in artifacts))


def cmd_artifacts(args: argparse.Namespace) -> int:
    store = store_from(args)
    task_id = store.resolve_task_id(args.id)
    artifacts = store.task_artifacts(task_id)
    if args.json:
        output.print_json(artifacts)
    elif artifacts:
        _artifact_table(artifacts)
    else:
        print(f"task {task_id} has no artifacts")
    return 0


def cmd_artifact(args: argparse.Namespace) -> int:
    store = store_from(args)
    task_id = store.resolve_task_id(args.id)
    artifact = store.get_artifact(task_id, args.name)
    source = files.resolve(artifact.file)
    if not source.is_file():
        raise ConfigError(f"artifact {args.name!r} of task {task_id}: its file {source} is "
                          f"missing (is {defaults.ENV_ARTIFACT_ROOT} the folder the task "
                          "wrote to?)")
    out = Path(args.out).expanduser()
    target = out / source.name if out.is_dir() else out
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    print(target)
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    store = store_from(args)
    source = store.get_task(store.resolve_task_id(args.id))
    overrides = dict(_assignment(text, source.parameters) for text in args.param)
    parent = store.resolve_task_id(args.parent) if args.parent else None
    task = store.clone_task(source.id, name=args.name, project=args.project, parent=parent,
                            parameters=overrides)
    return _print_created(task, args.json)


def cmd_enqueue(args: argparse.Namespace) -> int:
    from hpo.queue import dispatch
    from hpo.queue.app import make_app

    broker = common.broker_from(args)  # a bad flag first, before any store is opened
    store = store_from(args)
    task = dispatch.enqueue(store, make_app(broker), store.resolve_task_id(args.id),
                            args.queue)
    print(f"{task.id} queued on {task.queue}")
    return 0


def cmd_dequeue(args: argparse.Namespace) -> int:
    from hpo.queue import dispatch

    store = store_from(args)
    task = dispatch.dequeue(store, store.resolve_task_id(args.id))
    print(f"{task.id} {task.status.value}")
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    from hpo.optimization.ends import StopCause, stop_job

    store = store_from(args)
    task = stop_job(store, store.resolve_task_id(args.id), StopCause.user,
                    "stopped by hpo task abort")
    state = "stop requested" if task.status is Status.running else task.status.value
    print(f"{task.id} {state}")
    return 0


def cmd_scalars(args: argparse.Namespace) -> int:
    store = store_from(args)
    task_id = store.resolve_task_id(args.id)
    scalars = store.task_scalars(task_id, title=args.title, series=args.series)
    if args.json:
        output.print_json(scalars)
        return 0
    output.table(f"{len(scalars)} scalar(s) of {task_id}",
                 ["title", "series", "iteration", "value", "time"],
                 ([s.title, s.series, s.iteration, s.value, output.when(s.time)]
                  for s in scalars))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    store = store_from(args)
    task_id = store.resolve_task_id(args.id)
    lines = store.tail_logs(task_id, args.tail) if args.tail else store.read_logs(task_id)
    if args.json:
        output.print_json(lines)
        return 0
    for line in lines:
        sys.stdout.write(f"{output.when(line.time)} [{line.stream}] {line.text}\n")
    return 0


def _assignment(text: str, current: dict[str, Any] | None = None) -> tuple[str, Any]:
    """``--param Section/name=value``, typed; a name the store's tables could not show
    (a newline) or a value nested past Python's recursion limit is one ConfigError."""
    try:
        key, value = P.parse_assignment(text, current)
    except RecursionError:
        raise ConfigError(f"--param {limits.short(text)}: the value is nested too deeply: "
                          "flatten it") from None
    limits.check_name("parameter", key, "--param name")
    return key, value


def _print_created(task: TaskRecord, as_json: bool) -> int:
    if as_json:
        output.print_json(task)
    else:
        print(task.id)
    return 0
