"""The store's contract, run on SQLite and on PostgreSQL through the ``store`` fixtures.

Grouped by topic: tasks, typed parameters, the status life cycle, scalars, logs,
workers, opening a store, and concurrency with real processes. Times are driven by a
fake clock put in place of ``store.now``, so no test sleeps.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Table, create_engine, event, inspect, select, text, update

import hpo.store.tasks as store_tasks
from hpo.defaults import STOPPED_WORKERS_KEPT_S
from hpo.errors import (
    ConfigError,
    InvalidTransition,
    LostOwnership,
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
    TaskNotFound,
)
from hpo.lifecycle import TRANSITIONS, Status, TaskType
from hpo.records import ScriptInfo, TaskRecord
from hpo.store import NewClone, ScalarReport, Store, open_store, schema
from hpo.store.engine import safe_url
from tests.processes import run_together

# ----- helpers ----------------------------------------------------------------------


class Clock:
    """A settable stand-in for ``Store.now``."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(store: Store, monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(store, "now", fake)
    return fake


def fixed_task_ids(monkeypatch: pytest.MonkeyPatch, *ids: str) -> None:
    """The next tasks created get these ids, in order."""
    pending: Iterator[str] = iter(ids)
    monkeypatch.setattr(store_tasks, "new_task_id", lambda: next(pending))


# How to drive a new task to each status with set_status, step by step.
PATH_TO: dict[Status, list[Status]] = {
    Status.created: [],
    Status.queued: [Status.queued],
    Status.running: [Status.running],
    Status.completed: [Status.running, Status.completed],
    Status.failed: [Status.running, Status.failed],
    Status.stopped: [Status.running, Status.stopped],
}


def task_in(store: Store, status: Status, name: str | None = None) -> str:
    """A new task driven along the life cycle to ``status``."""
    task_id = store.create_task("proj", name or f"in-{status.value}").id
    for step in PATH_TO[status]:
        store.set_status(task_id, step)
    assert store.get_task(task_id).status is status
    return task_id


def claimed_task(store: Store, worker: str, name: str = "job") -> str:
    """A new task queued and claimed by ``worker`` (attempt 1)."""
    task_id = store.create_task("proj", name).id
    store.enqueue(task_id, "default")
    assert store.claim(task_id, worker) == 1
    return task_id


def reports(title: str, series: str, values: list[float], *, first_iteration: int = 0,
            time: float = 0.0) -> list[ScalarReport]:
    return [ScalarReport(title, series, first_iteration + i, v, time)
            for i, v in enumerate(values)]


def values_of(scalars: list[Any]) -> list[float]:
    return [s.value for s in scalars]


LEGAL = [(source, target) for source in Status for target in Status
         if target in TRANSITIONS[source]]
ILLEGAL = [(source, target) for source in Status for target in Status
           if target not in TRANSITIONS[source]]


def arrow(pair: tuple[Status, Status]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


# ----- tasks: create, get, find, resolve, update ------------------------------------


def test_create_task_returns_a_created_task_with_every_field_it_was_given(
        store: Store, clock: Clock) -> None:
    script = ScriptInfo(entry_point="train.py", working_dir="/src", argv=["--fast"],
                        interpreter="/usr/bin/python3", repository="git@x:y.git",
                        commit="abc123", diff="+ a line")
    parent = store.create_task("proj", "parent")

    task = store.create_task(
        "proj", "child", type=TaskType.testing, script=script, tags=["a", "b"],
        parent=parent.id, queue="gpu", time_limit=90.5, comment="hello")

    assert task == store.get_task(task.id)
    assert (task.project, task.name, task.type) == ("proj", "child", "testing")
    assert task.status is Status.created
    assert task.script == script
    assert task.tags == ["a", "b"]
    assert (task.parent, task.queue, task.time_limit, task.comment) == (
        parent.id, "gpu", 90.5, "hello")
    assert (task.worker, task.attempt, task.stop_requested) == (None, 0, False)
    assert task.created_at == task.updated_at == clock.t
    assert task.started_at is None and task.ended_at is None
    assert re.fullmatch(r"[0-9a-f]{32}", task.id)


@pytest.mark.parametrize(("project", "name"), [("", "n"), ("p", "")])
def test_create_task_without_a_project_or_a_name_is_a_config_error(
        store: Store, project: str, name: str) -> None:
    with pytest.raises(ConfigError):
        store.create_task(project, name)
    assert store.find_tasks() == []


def test_get_tasks_returns_tasks_in_the_order_asked_and_leaves_out_unknown_ids(
        store: Store) -> None:
    a, b, c = (store.create_task("proj", n).id for n in "abc")

    got = store.get_tasks([c, "0" * 32, a, b])

    assert [t.id for t in got] == [c, a, b]
    assert store.get_tasks([]) == []


@pytest.fixture
def catalog(store: Store, clock: Clock) -> dict[str, str]:
    """Tasks created one second apart (so "newest first" is well defined):
    p1/a training, p1/b testing (queued), p1/a again (running), p2/a training, and a
    child of the first p1/a."""
    ids: dict[str, str] = {}

    def add(key: str, project: str, name: str, **kw: Any) -> str:
        clock.advance(1)
        ids[key] = store.create_task(project, name, **kw).id
        return ids[key]

    add("p1a", "p1", "a")
    add("p1b", "p1", "b", type=TaskType.testing)
    store.enqueue(ids["p1b"], "q")
    add("p1a_again", "p1", "a")
    store.set_status(ids["p1a_again"], Status.running)
    add("p2a", "p2", "a")
    add("child", "p2", "child", parent=ids["p1a"], type=TaskType.optimizer)
    return ids


def found(store: Store, **filters: Any) -> list[str]:
    return [t.id for t in store.find_tasks(**filters)]


def test_find_tasks_without_filters_returns_every_task_newest_first(
        store: Store, catalog: dict[str, str]) -> None:
    assert found(store) == [catalog[k] for k in ("child", "p2a", "p1a_again", "p1b", "p1a")]


def test_find_tasks_filters_by_project(store: Store, catalog: dict[str, str]) -> None:
    assert found(store, project="p1") == [catalog["p1a_again"], catalog["p1b"], catalog["p1a"]]
    assert found(store, project="nope") == []


def test_find_tasks_filters_by_name_and_combines_filters(
        store: Store, catalog: dict[str, str]) -> None:
    assert found(store, name="a") == [catalog["p2a"], catalog["p1a_again"], catalog["p1a"]]
    assert found(store, project="p1", name="a") == [catalog["p1a_again"], catalog["p1a"]]
    assert found(store, project="p2", name="a", status="running") == []


def test_find_tasks_filters_by_one_status_or_several(
        store: Store, catalog: dict[str, str]) -> None:
    assert found(store, status="queued") == [catalog["p1b"]]
    assert found(store, status=Status.running) == [catalog["p1a_again"]]
    assert found(store, status=[Status.queued, "running"]) == [
        catalog["p1a_again"], catalog["p1b"]]
    assert found(store, status=[Status.failed]) == []


def test_find_tasks_filters_by_parent(store: Store, catalog: dict[str, str]) -> None:
    assert found(store, parent=catalog["p1a"]) == [catalog["child"]]
    assert found(store, parent=catalog["child"]) == []


def test_find_tasks_filters_by_type(store: Store, catalog: dict[str, str]) -> None:
    assert found(store, type="testing") == [catalog["p1b"]]
    assert found(store, type=TaskType.optimizer) == [catalog["child"]]
    assert found(store, type=TaskType.training) == [
        catalog["p2a"], catalog["p1a_again"], catalog["p1a"]]


def test_find_tasks_limit_keeps_the_newest(store: Store, catalog: dict[str, str]) -> None:
    assert found(store, limit=2) == [catalog["child"], catalog["p2a"]]
    assert found(store, project="p1", limit=1) == [catalog["p1a_again"]]


def test_find_tasks_filters_by_exact_tag_and_applies_limit_after_the_exact_match(
        store: Store, clock: Clock) -> None:
    # Given tasks tagged "best", a near miss "best_x" / "xbest", and untagged
    old = store.create_task("proj", "old", tags=["best", "x"]).id
    clock.advance(1)
    store.create_task("proj", "near", tags=["best_x", "xbest"])
    clock.advance(1)
    new = store.create_task("proj", "new", tags=["best"]).id
    store.create_task("proj", "plain")
    # Then only exact tags match, newest first, and the limit counts exact matches only
    assert found(store, tag="best") == [new, old]
    assert found(store, tag="best", limit=1) == [new]
    assert found(store, tag="x") == [old]
    assert found(store, tag="nope") == []


def test_find_tasks_finds_a_non_ascii_tag(store: Store) -> None:
    task = store.create_task("proj", "summer", tags=["été"])
    assert found(store, tag="été") == [task.id]


A_IDS = ("abcd" + "0" * 28, "abcd" + "1" * 28, "ef01" + "2" * 28)


def test_resolve_task_id_accepts_a_full_id_in_any_case(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_task_ids(monkeypatch, *A_IDS)
    for _ in A_IDS:
        store.create_task("proj", "t")
    assert store.resolve_task_id(A_IDS[0]) == A_IDS[0]
    assert store.resolve_task_id(f"  {A_IDS[2].upper()} ") == A_IDS[2]


def test_resolve_task_id_accepts_a_unique_prefix_of_four_or_more_characters(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_task_ids(monkeypatch, *A_IDS)
    for _ in A_IDS:
        store.create_task("proj", "t")
    assert store.resolve_task_id("abcd1") == A_IDS[1]
    assert store.resolve_task_id("EF01") == A_IDS[2]


def test_resolve_task_id_refuses_an_ambiguous_prefix(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_task_ids(monkeypatch, *A_IDS)
    for _ in A_IDS:
        store.create_task("proj", "t")
    with pytest.raises(TaskNotFound, match="ambiguous"):
        store.resolve_task_id("abcd")


@pytest.mark.parametrize("text", ["ef0", "ffff", "abcd2", "", "f" * 32])
def test_resolve_task_id_of_an_unknown_or_too_short_id_raises_task_not_found(
        store: Store, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    fixed_task_ids(monkeypatch, *A_IDS)
    for _ in A_IDS:
        store.create_task("proj", "t")
    with pytest.raises(TaskNotFound):
        store.resolve_task_id(text)


def test_resolve_task_id_treats_like_wildcards_as_plain_characters(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_task_ids(monkeypatch, *A_IDS)
    for _ in A_IDS:
        store.create_task("proj", "t")
    with pytest.raises(TaskNotFound):
        store.resolve_task_id("ef0_")


def test_update_task_changes_the_allowed_fields_and_the_update_time(
        store: Store, clock: Clock) -> None:
    task = store.create_task("proj", "old", tags=["x"])
    clock.advance(5)
    script = ScriptInfo(entry_point="run.py", working_dir="/w", argv=["-v"])

    updated = store.update_task(
        task.id, name="new", project="proj2", tags=("a", "b"), script=script, queue="q",
        time_limit=60.0, comment="note", status_message="msg")

    assert updated == store.get_task(task.id)
    assert (updated.name, updated.project, updated.tags, updated.script) == (
        "new", "proj2", ["a", "b"], script)
    assert (updated.queue, updated.time_limit, updated.comment, updated.status_message) == (
        "q", 60.0, "note", "msg")
    assert updated.updated_at == clock.t
    assert updated.created_at == task.created_at
    assert updated.status is Status.created


@pytest.mark.parametrize("field", ["status", "attempt", "worker", "id", "parameters"])
def test_update_task_refuses_other_fields_and_changes_nothing(
        store: Store, field: str) -> None:
    task = store.create_task("proj", "t")
    with pytest.raises(ConfigError, match=field):
        store.update_task(task.id, **{field: "x"}, name="renamed")
    assert store.get_task(task.id) == task


UNKNOWN = "0123456789abcdef" * 2
ON_UNKNOWN_TASK: dict[str, Callable[[Store], Any]] = {
    "get_task": lambda s: s.get_task(UNKNOWN),
    "update_task": lambda s: s.update_task(UNKNOWN, name="x"),
    "set_parameters": lambda s: s.set_parameters(UNKNOWN, {"a": 1}),
    "clone_task": lambda s: s.clone_task(UNKNOWN),
    "set_status": lambda s: s.set_status(UNKNOWN, Status.queued),
    "enqueue": lambda s: s.enqueue(UNKNOWN, "q"),
    "dequeue": lambda s: s.dequeue(UNKNOWN),
    "request_stop": lambda s: s.request_stop(UNKNOWN),
    "reset": lambda s: s.reset(UNKNOWN),
}


@pytest.mark.parametrize("operation", list(ON_UNKNOWN_TASK))
def test_every_operation_on_an_unknown_task_raises_task_not_found(
        store: Store, operation: str) -> None:
    store.create_task("proj", "someone else")
    with pytest.raises(TaskNotFound):
        ON_UNKNOWN_TASK[operation](store)


def test_count_tasks_counts_by_parent_and_status(store: Store) -> None:
    parent = store.create_task("proj", "parent").id
    children = [store.create_task("proj", f"c{i}", parent=parent).id for i in range(3)]
    store.enqueue(children[0], "q")
    store.set_status(children[1], Status.running)

    assert store.count_tasks() == 4
    assert store.count_tasks(parent=parent) == 3
    assert store.count_tasks(parent=parent, status=[Status.queued, Status.running]) == 2
    assert store.count_tasks(status=[Status.completed]) == 0


# ----- typed parameters ---------------------------------------------------------------

TYPED = {
    "General/epochs": 10,
    "General/lr": 0.001,
    "General/scale": 1.0,
    "General/flag": True,
    "General/off": False,
    "General/arch": "resnet",
    "General/seed": None,
    "General/layers": [64, 32, 0.5, True, "x"],
    "Args/batch": 32,
}


def assert_same_typed(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, and each value of the same type (True == 1 and 1 == 1.0 would hide it)."""
    assert actual == expected
    for key, value in expected.items():
        assert type(actual[key]) is type(value), key
        if isinstance(value, list):
            assert [type(v) for v in actual[key]] == [type(v) for v in value], key


def test_typed_parameters_survive_create_and_get(store: Store) -> None:
    task = store.create_task("proj", "t", parameters=TYPED)
    assert_same_typed(task.parameters, TYPED)
    assert_same_typed(store.get_task(task.id).parameters, TYPED)
    assert_same_typed(store.get_tasks([task.id])[0].parameters, TYPED)


def test_bare_parameter_names_go_to_the_general_section(store: Store) -> None:
    task = store.create_task("proj", "t", parameters={"lr": 0.1, "Args/lr": 0.2})
    assert task.parameters == {"General/lr": 0.1, "Args/lr": 0.2}


def test_typed_parameters_survive_a_clone(store: Store) -> None:
    source = store.create_task("proj", "t", parameters=TYPED)
    clone = store.clone_task(source.id)
    assert_same_typed(clone.parameters, TYPED)
    assert_same_typed(store.get_task(clone.id).parameters, TYPED)


@pytest.mark.parametrize(("original", "text", "expected"), [
    (0.1, "0.5", 0.5),
    (0.1, "7", 7.0),
    (10, "7", 7),
    (True, "false", False),
    (False, "true", True),
    ("adam", "sgd", "sgd"),
    ("adam", "7", "7"),
    ([1, 2], "[3, 4]", [3, 4]),
], ids=["float<-0.5", "float<-7", "int<-7", "bool<-false", "bool<-true", "str<-sgd",
        "str<-7", "list<-[3,4]"])
def test_clone_overrides_given_as_text_take_the_type_of_the_replaced_value(
        store: Store, original: Any, text: str, expected: Any) -> None:
    source = store.create_task("proj", "t", parameters={"General/p": original, "other": 1})
    # bare name: it is General/p that gets replaced
    clone = store.clone_task(source.id, parameters={"p": text})
    assert_same_typed(clone.parameters, {"General/p": expected, "General/other": 1})
    assert_same_typed(store.get_task(clone.id).parameters, clone.parameters)
    assert store.get_task(source.id).parameters == source.parameters


def test_clone_adds_new_parameters_and_keeps_typed_values_as_given(store: Store) -> None:
    source = store.create_task("proj", "t", parameters={"lr": 0.1})
    clone = store.clone_task(source.id, parameters={"Args/new": "x", "depth": 3,
                                                    "lr": 0.25})
    assert_same_typed(clone.parameters,
                      {"General/lr": 0.25, "Args/new": "x", "General/depth": 3})


def test_clone_copies_script_tags_type_and_time_limit_and_records_its_source(
        store: Store) -> None:
    script = ScriptInfo(entry_point="train.py", working_dir="/src", argv=["a"])
    source = store.create_task("proj", "base", type=TaskType.testing, script=script,
                               tags=["t1"], time_limit=30.0, queue="gpu")
    store.set_status(source.id, Status.running)
    parent = store.create_task("proj", "optimizer").id

    clone = store.clone_task(source.id, parent=parent)

    assert clone.id != source.id
    assert (clone.status, clone.attempt, clone.worker) == (Status.created, 0, None)
    assert (clone.project, clone.name, clone.type) == ("proj", "base (clone)", "testing")
    assert (clone.script, clone.tags, clone.time_limit) == (script, ["t1"], 30.0)
    assert clone.parent == parent
    assert clone.cloned_from == source.id  # a field: the comment stays the user's
    assert clone.comment is None
    assert (source.cloned_from, store.get_task(parent).cloned_from) == (None, None)


def test_clone_takes_a_new_name_project_tags_and_time_limit(store: Store) -> None:
    source = store.create_task("proj", "base", tags=["t1"], time_limit=30.0)
    clone = store.clone_task(source.id, name="trial 1", project="other", tags=[],
                             time_limit=5.0)
    assert (clone.name, clone.project, clone.tags, clone.time_limit) == (
        "trial 1", "other", [], 5.0)


def test_a_clone_made_queued_is_the_clone_an_enqueue_would_leave(store: Store) -> None:
    source = store.create_task("proj", "base", parameters={"lr": 0.1}, tags=["t1"])
    parent = store.create_task("proj", "optimizer").id
    made = store.clone_task(source.id, parent=parent, parameters={"lr": 0.5}, queue="q")
    enqueued = store.enqueue(store.clone_task(source.id, parent=parent,
                                              parameters={"lr": 0.5}).id, "q")

    def fields(t: Any) -> tuple[Any, ...]:
        return (t.status, t.queue, t.attempt, t.worker, t.stop_requested,
                t.status_message, t.parameters, t.tags, t.parent, t.cloned_from)

    assert fields(made) == fields(enqueued) == fields(store.get_task(made.id))
    assert made.status is Status.queued
    claimed = store.claim_task(made.id, "w1")
    assert claimed is not None and claimed.attempt == 1


def test_a_clone_queued_without_a_queue_name_is_a_config_error(store: Store) -> None:
    source = store.create_task("proj", "base")
    with pytest.raises(ConfigError):
        store.clone_task(source.id, queue="")
    assert store.count_tasks() == 1


def test_a_launch_saves_the_state_and_makes_its_clones_queued_in_order(
        store: Store) -> None:
    source = store.create_task("proj", "base", parameters={"x": 0.0}, time_limit=30.0)
    optimizer = store.create_task("proj", "optimizer", type=TaskType.optimizer).id
    store.create_optimization(optimizer, {"c": 1})
    ids = store.launch_clones(optimizer, {"step": 1}, source.id, [
        NewClone("a", {"x": 1.0}, ["trial:a"]),
        NewClone("b", {"x": 2.0}, ["trial:b"], time_limit=5.0),
    ], queue="q", parent=optimizer, project="spawned")
    clones = store.get_tasks(ids)

    assert [(c.name, c.parameters["General/x"], c.tags, c.time_limit) for c in clones] == [
        ("a", 1.0, ["trial:a"], 30.0), ("b", 2.0, ["trial:b"], 5.0)]
    assert all((c.status, c.queue, c.parent, c.project, c.cloned_from) ==
               (Status.queued, "q", optimizer, "spawned", source.id) for c in clones)
    assert [c.id for c in clones] == ids
    assert store.launch_clones(optimizer, {"step": 2}, source.id, [], queue="q") == []
    assert store.load_optimization(optimizer)[1] == {"step": 2}
    store.save_optimization_state(optimizer, {"step": 1})
    assert store.load_optimization(optimizer) == ({"c": 1}, {"step": 1})


def test_later_launches_clone_the_source_as_it_is_at_each_launch(store: Store) -> None:
    """A launch after the first (on PostgreSQL one statement, cloning the source as the
    last launch read it while it is unchanged) makes the clones the first makes, and
    clones the source afresh once it has changed: its parameters, script, time limit."""
    source = store.create_task("proj", "base", parameters={"x": 0.0, "y": 1}, tags=["t"],
                               time_limit=30.0, script=ScriptInfo("train.py", "/src", ["a"]))
    optimizer = store.create_task("proj", "optimizer", type=TaskType.optimizer).id
    store.create_optimization(optimizer, {"c": 1})

    def launch(step: int, *clones: NewClone) -> list[TaskRecord]:
        ids = store.launch_clones(optimizer, {"step": step}, source.id, list(clones),
                                  queue="q", parent=optimizer, project="spawned")
        assert store.load_optimization(optimizer)[1] == {"step": step}
        return store.get_tasks(ids)

    def fields(task: TaskRecord) -> tuple[Any, ...]:
        return (task.project, task.type, task.status, task.parent, task.tags, task.queue,
                task.script, task.parameters, task.time_limit, task.worker, task.attempt,
                task.stop_requested, task.status_message, task.exit_code, task.comment,
                task.cloned_from, task.started_at, task.ended_at)

    first = launch(1, NewClone("a", {"x": 1.0}))
    read = store._get
    store._get = lambda *a: pytest.fail("an unchanged source was read again")  # type: ignore[method-assign]
    try:
        again = launch(2, NewClone("a", {"x": 1.0}),
                       NewClone("b", {"y": "7"}, ["trial:b"], 5.0))
    finally:
        store._get = read  # type: ignore[method-assign]
    assert [fields(c) for c in again[:1]] == [fields(c) for c in first]
    assert (again[1].name, again[1].parameters, again[1].tags, again[1].time_limit) == (
        "b", {"General/x": 0.0, "General/y": 7}, ["trial:b"], 5.0)
    assert again[0].created_at >= first[0].created_at

    store.set_parameters(source.id, {"x": 2.5, "z": "new"})
    store.update_task(source.id, time_limit=60.0, script=ScriptInfo("train2.py", "/src"))
    changed = launch(3, NewClone("c"), NewClone("d", {"x": 9.0}, tags=["trial:d"]))
    assert [(c.parameters, c.tags, c.time_limit, c.script.entry_point if c.script else None)
            for c in changed] == [
        ({"General/x": 2.5, "General/y": 1, "General/z": "new"}, [], 60.0, "train2.py"),
        ({"General/x": 9.0, "General/y": 1, "General/z": "new"}, ["trial:d"], 60.0,
         "train2.py")]
    assert launch(4, NewClone("e"))[0].parameters["General/x"] == 2.5
    assert store.count_tasks(parent=optimizer) == 6


def test_a_later_launch_refuses_what_the_first_refuses_and_stores_nothing(
        store: Store) -> None:
    """A launch that does not read its source again refuses a value too long for its
    column (PostgreSQL: not cut short by a cast) or a state that is no JSON, as the
    first launch does, and stores neither the state nor a clone."""
    source = store.create_task("proj", "base")
    optimizer = store.create_task("proj", "optimizer", type=TaskType.optimizer).id
    store.create_optimization(optimizer, {"c": 1})
    store.launch_clones(optimizer, {"step": 1}, source.id, [NewClone("a")], queue="q",
                        parent=optimizer)
    with pytest.raises(StoreError):
        store.launch_clones(optimizer, {"step": 2, "bad": object()}, source.id,
                            [NewClone("b")], queue="q", parent=optimizer)
    if store.dialect != "sqlite":  # SQLite keeps any length
        with pytest.raises(StoreError, match="refused a value"):
            store.launch_clones(optimizer, {"step": 3}, source.id, [NewClone("c" * 600)],
                                queue="q", parent=optimizer)
    assert store.load_optimization(optimizer)[1] == {"step": 1}
    assert [c.name for c in store.find_tasks(parent=optimizer)] == ["a"]


def test_reports_after_the_cursors_of_many_jobs_come_whole_and_oldest_first(
        store: Store) -> None:
    """A controller's read of its jobs' new reports, in statements of a bounded number
    of cursors (SQLite parses their OR as a tree at most 1,000 deep): more jobs than
    one statement takes all come back, oldest first, and a limit keeps the oldest (556
    jobs: in one statement, 1,024 terms with the padding, SQLite refuses it)."""
    from hpo.store.metrics import _CURSORS_PER_READ

    ids = [store.create_task("proj", f"t{n}").id for n in range(2 * _CURSORS_PER_READ + 44)]
    for n, task_id in enumerate(reversed(ids)):
        store.append_scalars(task_id, [("loss", "total", 0, float(n), 0.0)])
    cursors = {task_id: 0 for task_id in ids}
    records, scalars = store.read_jobs(ids, cursors, titles=["loss"])
    assert len(records) == len(ids)
    assert [s.value for s in scalars] == [float(n) for n in range(len(ids))]
    assert [s.id for s in scalars] == sorted(s.id for s in scalars)
    oldest = store.read_scalars(cursors, limit=5)
    assert [s.value for s in oldest] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert store.read_jobs(ids, cursors, titles=["other"])[1] == []


def test_a_sqlite_writer_that_cannot_take_the_lock_is_a_store_error(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's BEGIN IMMEDIATE (sent on the driver's cursor) that waits out the busy
    timeout is one StoreError, as any other statement's failure."""
    import sqlite3

    monkeypatch.setattr("hpo.store.engine.SQLITE_BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}")
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            store.create_task("proj", "t")
        holder.execute("ROLLBACK")
        assert store.create_task("proj", "t").name == "t"
    finally:
        holder.close()
        store.close()


def test_a_launch_that_fails_stores_neither_its_state_nor_a_clone(store: Store) -> None:
    source = store.create_task("proj", "base")
    optimizer = store.create_task("proj", "optimizer", type=TaskType.optimizer).id
    store.create_optimization(optimizer, {"c": 1})
    store.save_optimization_state(optimizer, {"step": 1})
    with pytest.raises(TaskNotFound):  # the source is unknown: after the state's write
        store.launch_clones(optimizer, {"step": 2}, UNKNOWN, [NewClone("a")], queue="q",
                            parent=optimizer)
    assert store.load_optimization(optimizer)[1] == {"step": 1}
    with pytest.raises(TaskNotFound):  # no such optimization
        store.launch_clones(UNKNOWN, {"step": 2}, source.id, [NewClone("a")], queue="q",
                            parent=optimizer)
    assert store.count_tasks(parent=optimizer) == 0
    # Once a launch has read the source (on PostgreSQL, later ones are one statement)
    store.launch_clones(optimizer, {"step": 3}, source.id, [NewClone("a")], queue="q",
                        parent=optimizer)
    with pytest.raises(TaskNotFound):
        store.launch_clones(UNKNOWN, {"step": 4}, source.id, [NewClone("b")], queue="q",
                            parent=optimizer)
    assert store.count_tasks(parent=optimizer) == 1
    assert store.load_optimization(optimizer)[1] == {"step": 3}


def test_a_launch_retried_after_an_unacknowledged_commit_inserts_only_what_is_missing(
        store: Store) -> None:
    source = store.create_task("proj", "base")
    optimizer = store.create_task("proj", "optimizer", type=TaskType.optimizer).id
    store.create_optimization(optimizer, {"c": 1})
    first, second = NewClone("a", tags=["trial:a"]), NewClone("b", tags=["trial:b"])
    # Given a launch that committed, though its caller heard an error
    assert store.launch_clones(optimizer, {"step": 1}, source.id, [first], queue="q",
                               parent=optimizer) == [first.id]
    # When the caller retries it (with one more clone), only what is missing is inserted
    ids = store.launch_clones(optimizer, {"step": 2}, source.id, [first, second],
                              queue="q", parent=optimizer, only_missing=True)
    assert ids == [first.id, second.id]
    clones = store.find_tasks(parent=optimizer)
    assert sorted((c.id, c.name) for c in clones) == sorted([(first.id, "a"),
                                                             (second.id, "b")])
    assert store.load_optimization(optimizer)[1] == {"step": 2}
    # Without only_missing, the same id again is refused, and nothing is stored
    with pytest.raises(StoreError):
        store.launch_clones(optimizer, {"step": 3}, source.id, [first], queue="q",
                            parent=optimizer)
    assert store.load_optimization(optimizer)[1] == {"step": 2}
    assert store.count_tasks(parent=optimizer) == 2


def test_set_parameters_merges_or_replaces(store: Store) -> None:
    task = store.create_task("proj", "t", parameters={"a": 1, "b": 2})

    merged = store.set_parameters(task.id, {"b": 3.5, "Args/c": False})
    assert_same_typed(merged, {"General/a": 1, "General/b": 3.5, "Args/c": False})
    assert_same_typed(store.get_task(task.id).parameters, merged)

    replaced = store.set_parameters(task.id, {"z": None}, replace=True)
    assert replaced == {"General/z": None}
    assert store.get_task(task.id).parameters == {"General/z": None}


# ----- status life cycle --------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[arrow(p) for p in LEGAL])
def test_every_legal_transition_is_allowed(
        store: Store, clock: Clock, source: Status, target: Status) -> None:
    task_id = task_in(store, source)
    before = store.get_task(task_id)
    clock.advance(10)

    after = store.set_status(task_id, target, message="why", exit_code=3)

    assert after == store.get_task(task_id)
    assert after.status is target
    assert after.updated_at == clock.t
    if target is Status.running:
        assert after.attempt == before.attempt + 1
        assert (after.started_at, after.ended_at) == (clock.t, None)
    else:
        assert after.attempt == before.attempt
    if target.is_final:
        assert after.ended_at == clock.t
    if target is Status.created:
        # back to the start: what the last run left behind is cleared
        assert (after.worker, after.stop_requested, after.exit_code) == (None, False, None)
        assert (after.started_at, after.ended_at, after.status_message) == (None, None, None)
    else:
        assert (after.status_message, after.exit_code) == ("why", 3)


def test_every_illegal_transition_raises_invalid_transition_and_changes_nothing(
        store: Store) -> None:
    tasks = {status: task_in(store, status) for status in Status}
    for source, target in ILLEGAL:
        before = store.get_task(tasks[source])
        with pytest.raises(InvalidTransition):
            store.set_status(tasks[source], target)
        assert store.get_task(tasks[source]) == before, arrow((source, target))


def test_created_cannot_jump_to_completed(store: Store) -> None:
    task_id = task_in(store, Status.created)
    with pytest.raises(InvalidTransition, match="created"):
        store.set_status(task_id, Status.completed)
    assert store.get_task(task_id).status is Status.created


def test_completed_cannot_go_back_to_running(store: Store) -> None:
    task_id = task_in(store, Status.completed)
    with pytest.raises(InvalidTransition, match="completed"):
        store.set_status(task_id, "running")
    assert store.get_task(task_id).status is Status.completed


def test_enqueue_moves_a_created_task_to_its_queue(store: Store) -> None:
    task = store.create_task("proj", "t", queue="old")
    queued = store.enqueue(task.id, "gpu")
    assert (queued.status, queued.queue) == (Status.queued, "gpu")
    assert store.get_task(task.id) == queued


def test_enqueue_without_a_queue_name_is_a_config_error(store: Store) -> None:
    task = store.create_task("proj", "t")
    with pytest.raises(ConfigError):
        store.enqueue(task.id, "")
    assert store.get_task(task.id) == task


@pytest.mark.parametrize("status", [
    Status.queued,
    Status.running,
    Status.completed,
    Status.failed,
])
def test_enqueue_of_a_task_not_created_is_an_invalid_transition(
        store: Store, status: Status) -> None:
    task_id = task_in(store, status)
    with pytest.raises(InvalidTransition):
        store.enqueue(task_id, "q")
    assert store.get_task(task_id).status is status


def test_dequeue_returns_a_queued_task_to_created(store: Store) -> None:
    task_id = task_in(store, Status.created)
    store.enqueue(task_id, "q")
    assert store.dequeue(task_id).status is Status.created
    with pytest.raises(InvalidTransition):
        store.dequeue(task_in(store, Status.running))
    # a finished task keeps its results: only reset() takes it back to created
    done = task_in(store, Status.completed, "done")
    with pytest.raises(InvalidTransition, match="only a queued task can be dequeued"):
        store.dequeue(done)
    assert store.get_task(done).status is Status.completed


def test_request_stop_on_a_queued_task_stops_it_at_once(store: Store, clock: Clock) -> None:
    task_id = task_in(store, Status.queued)
    clock.advance(3)
    stopped = store.request_stop(task_id, "aborted by user")
    assert stopped.status is Status.stopped
    assert (stopped.status_message, stopped.ended_at) == ("aborted by user", clock.t)
    assert store.claim(task_id, "w") is None


def test_request_stop_on_a_running_task_only_flags_it(store: Store) -> None:
    task_id = claimed_task(store, "w1")
    flagged = store.request_stop(task_id)
    assert flagged.status is Status.running
    assert flagged.stop_requested is True
    assert flagged.status_message
    assert (flagged.worker, flagged.attempt, flagged.ended_at) == ("w1", 1, None)
    assert store.get_task(task_id) == flagged


@pytest.mark.parametrize("status",
                         [Status.created, Status.completed, Status.failed, Status.stopped])
def test_request_stop_on_a_task_neither_queued_nor_running_is_an_invalid_transition(
        store: Store, status: Status) -> None:
    task_id = task_in(store, status)
    before = store.get_task(task_id)
    with pytest.raises(InvalidTransition):
        store.request_stop(task_id)
    assert store.get_task(task_id) == before


def test_reset_returns_a_finished_task_to_created_and_clears_its_scalars_and_logs(
        store: Store) -> None:
    task_id = claimed_task(store, "w1")
    other = claimed_task(store, "w1", "other")
    for t in (task_id, other):
        store.append_scalars(t, reports("loss", "train", [3.0, 2.0]))
        store.append_logs(t, [(1.0, "stdout", "hello")])
    assert store.finish(task_id, 1, Status.failed, exit_code=1, message="boom")

    reset = store.reset(task_id)

    assert reset.status is Status.created
    assert (reset.worker, reset.exit_code, reset.status_message) == (None, None, None)
    assert (reset.started_at, reset.ended_at, reset.stop_requested) == (None, None, False)
    assert store.task_scalars(task_id) == []
    assert store.read_scalars({task_id: 0}) == []
    assert store.scalar_summary([task_id]) == []
    assert store.read_logs(task_id) == []
    # another task's data is untouched
    assert values_of(store.task_scalars(other)) == [3.0, 2.0]
    assert len(store.read_logs(other)) == 1


def test_reset_of_a_running_task_is_refused_and_keeps_its_scalars_and_logs(
        store: Store) -> None:
    task_id = claimed_task(store, "w1")
    store.append_scalars(task_id, reports("loss", "train", [1.0]))
    store.append_logs(task_id, [(1.0, "stdout", "still here")])
    with pytest.raises(InvalidTransition):
        store.reset(task_id)
    assert store.get_task(task_id).status is Status.running
    assert len(store.task_scalars(task_id)) == 1
    assert len(store.read_logs(task_id)) == 1


def test_claim_returns_the_attempt_number_and_a_second_claim_gets_none(
        store: Store, clock: Clock) -> None:
    task_id = task_in(store, Status.queued)
    clock.advance(2)

    assert store.claim(task_id, "w1") == 1
    assert store.claim(task_id, "w2") is None

    task = store.get_task(task_id)
    assert (task.status, task.worker, task.attempt) == (Status.running, "w1", 1)
    assert (task.started_at, task.ended_at) == (clock.t, None)


def test_claim_of_a_dequeued_aborted_or_unknown_task_returns_none(store: Store) -> None:
    dequeued = task_in(store, Status.queued, "dequeued")
    store.dequeue(dequeued)
    aborted = task_in(store, Status.queued, "aborted")
    store.request_stop(aborted)
    never_queued = task_in(store, Status.created, "never queued")

    for task_id in (dequeued, aborted, never_queued, UNKNOWN):
        assert store.claim(task_id, "w1") is None
    assert store.get_task(dequeued).status is Status.created
    assert store.get_task(aborted).status is Status.stopped
    assert store.get_task(never_queued).worker is None


def test_finish_by_the_owning_attempt_ends_the_task(store: Store, clock: Clock) -> None:
    task_id = claimed_task(store, "w1")
    clock.advance(7)

    assert store.finish(task_id, 1, Status.completed, exit_code=0, message="done") is True

    task = store.get_task(task_id)
    assert (task.status, task.exit_code, task.status_message) == (
        Status.completed, 0, "done")
    assert task.ended_at == clock.t
    assert store.finish(task_id, 1, Status.failed) is False
    assert store.get_task(task_id) == task


def test_finish_by_a_stale_attempt_returns_false_and_changes_nothing(store: Store) -> None:
    # Given attempt 1 was presumed lost, re-queued, and claimed again as attempt 2
    task_id = claimed_task(store, "w1")
    assert store.requeue(task_id, 1, "agent lost") is Status.queued
    assert store.claim(task_id, "w2") == 2
    before = store.get_task(task_id)
    # When the old agent reports its end, Then nothing changes
    assert store.finish(task_id, 1, Status.completed, exit_code=0) is False
    assert store.requeue(task_id, 1) is None
    assert store.get_task(task_id) == before
    # And the owning attempt still can
    assert store.finish(task_id, 2, "failed", exit_code=1) is True
    assert store.get_task(task_id).status is Status.failed


@pytest.mark.parametrize("status", [Status.running, Status.queued, Status.created])
def test_finish_with_a_status_that_is_not_final_is_refused(
        store: Store, status: Status) -> None:
    task_id = claimed_task(store, "w1")
    before = store.get_task(task_id)
    with pytest.raises(InvalidTransition):
        store.finish(task_id, 1, status)
    assert store.get_task(task_id) == before


def test_requeue_by_the_owning_attempt_puts_the_task_back_for_a_new_attempt(
        store: Store) -> None:
    task_id = claimed_task(store, "w1")

    assert store.requeue(task_id, 1, "agent shut down") is Status.queued

    task = store.get_task(task_id)
    assert (task.status, task.worker, task.stop_requested) == (Status.queued, None, False)
    assert task.status_message == "agent shut down"
    assert task.queue == "default"
    assert store.claim(task_id, "w2") == 2
    assert store.get_task(task_id).worker == "w2"


def test_requeue_of_an_attempt_asked_to_stop_stops_it_instead(store: Store) -> None:
    # Given a running task the user aborted, whose agent is lost before it saw the flag
    task_id = claimed_task(store, "w1")
    store.request_stop(task_id, "aborted by the user")
    # When a reaper re-queues it
    assert store.requeue(task_id, 1, "agent w1 lost") is Status.stopped
    # Then it ends stopped, as asked, rather than run again unseen
    task = store.get_task(task_id)
    assert (task.status, task.stop_requested, task.attempt) == (Status.stopped, False, 1)
    assert task.status_message == "aborted by the user"
    assert task.ended_at is not None
    assert store.claim(task_id, "w2") is None


def test_requeue_by_a_stale_attempt_returns_false_and_changes_nothing(store: Store) -> None:
    task_id = claimed_task(store, "w1")
    before = store.get_task(task_id)
    assert store.requeue(task_id, 0) is None
    assert store.requeue(task_id, 2) is None
    assert store.get_task(task_id) == before
    completed = task_in(store, Status.completed)
    assert store.requeue(completed, store.get_task(completed).attempt) is None
    assert store.get_task(completed).status is Status.completed


# ----- scalars -------------------------------------------------------------------------


def test_append_scalars_stores_each_batch_and_returns_its_size(store: Store) -> None:
    task_id = claimed_task(store, "w1")
    assert store.append_scalars(task_id, []) == 0
    assert store.append_scalars(task_id, reports("loss", "train", [3.0, 2.0], time=5.5),
                                attempt=1) == 2
    # plain tuples are accepted too
    assert store.append_scalars(task_id, [("acc", "val", 0, 0.5, 6.0)], attempt=1) == 1

    got = store.task_scalars(task_id)
    assert [(s.title, s.series, s.iteration, s.value, s.time, s.attempt) for s in got] == [
        ("loss", "train", 0, 3.0, 5.5, 1),
        ("loss", "train", 1, 2.0, 5.5, 1),
        ("acc", "val", 0, 0.5, 6.0, 1),
    ]
    assert all(s.task_id == task_id for s in got)
    assert [s.id for s in got] == sorted({s.id for s in got})


def test_task_scalars_filters_by_title_and_series(store: Store) -> None:
    task_id = task_in(store, Status.running)
    store.append_scalars(task_id, [("loss", "train", 0, 1.0, 0.0), ("loss", "val", 0, 2.0, 0.0),
                                   ("acc", "val", 0, 3.0, 0.0)])
    assert values_of(store.task_scalars(task_id, title="loss")) == [1.0, 2.0]
    assert values_of(store.task_scalars(task_id, series="val")) == [2.0, 3.0]
    assert values_of(store.task_scalars(task_id, title="acc", series="val")) == [3.0]


def test_read_scalars_is_incremental_by_cursor(store: Store) -> None:
    task_id = task_in(store, Status.running)
    store.append_scalars(task_id, reports("loss", "train", [1.0, 2.0, 3.0]))

    first = store.read_scalars({task_id: 0})
    assert values_of(first) == [1.0, 2.0, 3.0]
    cursor = first[-1].id
    # Nothing new yet
    assert store.read_scalars({task_id: cursor}) == []

    store.append_scalars(task_id, reports("loss", "train", [4.0, 5.0], first_iteration=3))
    newer = store.read_scalars({task_id: cursor})
    assert values_of(newer) == [4.0, 5.0]
    assert all(s.id > cursor for s in newer)
    assert store.read_scalars({task_id: newer[-1].id}) == []


def test_read_scalars_takes_a_different_cursor_for_each_task_in_one_call(
        store: Store) -> None:
    a, b, c = (task_in(store, Status.running, n) for n in "abc")
    store.append_scalars(a, reports("loss", "a", [1.0, 2.0]))
    store.append_scalars(b, reports("loss", "b", [10.0, 20.0]))
    store.append_scalars(c, reports("loss", "c", [99.0]))
    cursor_a = store.read_scalars({a: 0})[-1].id
    store.append_scalars(a, reports("loss", "a", [3.0], first_iteration=2))
    store.append_scalars(b, reports("loss", "b", [30.0], first_iteration=2))

    got = store.read_scalars({a: cursor_a, b: 0})

    # a from its cursor, b from the start, c not asked for; oldest first
    assert [(s.task_id, s.value) for s in got] == [(b, 10.0), (b, 20.0), (a, 3.0), (b, 30.0)]
    assert [s.id for s in got] == sorted(s.id for s in got)
    assert store.read_scalars({}) == []


def test_read_jobs_is_get_tasks_and_read_scalars_in_one_call(store: Store) -> None:
    a, b = (task_in(store, Status.running, n) for n in "ab")
    store.append_scalars(a, reports("loss", "a", [1.0, 2.0]))
    store.append_scalars(b, reports("acc", "b", [0.5]))
    store.append_scalars(b, reports("loss", "b", [10.0]))
    cursor_a = store.read_scalars({a: 0})[0].id

    records, scalars = store.read_jobs([b, UNKNOWN, a], {a: cursor_a, b: 0},
                                       titles=["loss"])

    assert [t.id for t in records] == [b, a]  # in the order asked, the unknown left out
    assert records == store.get_tasks([b, a])
    assert scalars == store.read_scalars({a: cursor_a, b: 0}, titles=["loss"])
    assert [(s.task_id, s.value) for s in scalars] == [(a, 2.0), (b, 10.0)]
    assert store.read_jobs([], {}) == ([], [])
    assert store.read_jobs([a], {}) == (store.get_tasks([a]), [])


def test_read_scalars_honours_a_limit_and_the_cursor_picks_up_the_rest(
        store: Store) -> None:
    task_id = task_in(store, Status.running)
    store.append_scalars(task_id, reports("loss", "train", [float(i) for i in range(5)]))
    page = store.read_scalars({task_id: 0}, limit=2)
    assert values_of(page) == [0.0, 1.0]
    assert values_of(store.read_scalars({task_id: page[-1].id})) == [2.0, 3.0, 4.0]


def test_nan_is_kept_as_nan_and_infinities_survive(store: Store) -> None:
    task_id = task_in(store, Status.running)
    store.append_scalars(task_id, reports("loss", "train", [math.nan, math.inf, -math.inf, 1.5]))
    for got in (store.task_scalars(task_id), store.read_scalars({task_id: 0})):
        assert len(got) == 4
        assert math.isnan(got[0].value)
        assert values_of(got[1:]) == [math.inf, -math.inf, 1.5]


def summary_of(store: Store, task_ids: list[str], **filters: Any) -> dict[tuple, tuple]:
    return {(m.task_id, m.title, m.series): (m.last, m.min, m.max, m.last_iteration, m.count)
            for m in store.scalar_summary(task_ids, **filters)}


def test_scalar_summary_gives_last_min_max_for_every_series_of_many_tasks_in_one_call(
        store: Store) -> None:
    a, b, silent = (task_in(store, Status.running, n) for n in ("a", "b", "silent"))
    store.append_scalars(a, reports("loss", "train", [5.0, 1.0, 3.0]))
    store.append_scalars(a, reports("acc", "val", [0.1, 0.9]))
    store.append_scalars(b, reports("loss", "train", [-2.0, 7.0, 4.0, 6.0]))
    other = task_in(store, Status.running, "not asked")
    store.append_scalars(other, reports("loss", "train", [0.0]))

    summary = store.scalar_summary([a, b, silent])

    assert summary_of(store, [a, b, silent]) == {
        (a, "loss", "train"): (3.0, 1.0, 5.0, 2, 3),
        (a, "acc", "val"): (0.9, 0.1, 0.9, 1, 2),
        (b, "loss", "train"): (6.0, -2.0, 7.0, 3, 4),
    }
    assert len(summary) == 3
    assert store.scalar_summary([]) == []


def test_children_series_and_mark_read_one_series_of_every_child_in_one_query(
        store: Store) -> None:
    parent = store.create_task("proj", "optimizer").id
    a, b = (store.create_task("proj", n, parent=parent).id for n in ("a", "b"))
    stranger = store.create_task("proj", "not a child").id
    store.append_scalars(a, reports("val", "loss", [3.0, 2.0]))
    store.append_scalars(b, reports("val", "loss", [5.0]) + reports("val", "acc", [0.5]))
    store.append_scalars(b, reports("train", "loss", [9.0]))
    store.append_scalars(stranger, reports("val", "loss", [1.0]))

    got = [(s.task_id, s.iteration, s.value) for s in store.children_series(parent, "val",
                                                                            "loss")]
    assert got == [(a, 0, 3.0), (a, 1, 2.0), (b, 0, 5.0)]  # oldest first
    assert store.children_series(stranger, "val", "loss") == []  # no children

    count, highest = store.children_scalar_mark(parent, ["val"])
    assert count == 4 and highest > 0
    # The mark moves when a child reports, not when a stranger or another title does.
    store.append_scalars(stranger, reports("val", "loss", [0.0]))
    store.append_scalars(a, reports("train", "loss", [0.0]))
    assert store.children_scalar_mark(parent, ["val"]) == (count, highest)
    store.append_scalars(a, reports("val", "loss", [1.0], first_iteration=2))
    assert store.children_scalar_mark(parent, ["val"])[0] == count + 1
    assert store.children_scalar_mark(stranger, ["val"]) == (0, 0)


def test_children_mark_moves_when_a_child_is_added_or_changes(store: Store) -> None:
    parent = store.create_task("proj", "optimizer").id
    assert store.children_mark(parent) == (0, 0.0, 0.0)
    child = store.create_task("proj", "a", parent=parent).id
    late = store.create_task("proj", "b", parent=parent).id
    first = store.children_mark(parent)
    assert first[0] == 2
    store.create_task("proj", "not a child")
    assert store.children_mark(parent) == first
    store.set_status(child, Status.queued)
    second = store.children_mark(parent)
    assert second[0] == 2 and second[1] >= first[1] and second != first
    # A change written with a clock behind the others' still moves the mark.
    real_now = store.now
    store.now = lambda: real_now() - 3600  # type: ignore[method-assign]
    store.set_status(late, Status.queued)
    store.now = real_now  # type: ignore[method-assign]
    third = store.children_mark(parent)
    assert third[1] == second[1] and third != second


def test_scalar_summary_last_is_the_value_at_the_highest_iteration(store: Store) -> None:
    # Given iteration 9 was reported before iterations 2 and 5 (and 9 again, later)
    task_id = task_in(store, Status.running)
    store.append_scalars(task_id, [("loss", "train", 9, 0.9, 0.0)])
    store.append_scalars(task_id, [("loss", "train", 2, 0.2, 0.0),
                                   ("loss", "train", 5, 0.5, 0.0)])
    assert summary_of(store, [task_id]) == {
        (task_id, "loss", "train"): (0.9, 0.2, 0.9, 9, 3)}
    # When iteration 9 is reported again, the later report is the last
    store.append_scalars(task_id, [("loss", "train", 9, 0.8, 0.0)])
    assert summary_of(store, [task_id])[(task_id, "loss", "train")] == (0.8, 0.2, 0.9, 9, 4)


def test_scalar_summary_reports_a_nan_last_but_leaves_nan_out_of_min_and_max(
        store: Store) -> None:
    task_id = task_in(store, Status.running)
    store.append_scalars(task_id, reports("loss", "train", [4.0, math.nan, 2.0, math.nan]))
    store.append_scalars(task_id, reports("only", "nan", [math.nan]))

    got = {(m.title, m.series): m for m in store.scalar_summary([task_id])}

    loss = got[("loss", "train")]
    assert math.isnan(loss.last)
    assert (loss.min, loss.max, loss.last_iteration, loss.count) == (2.0, 4.0, 3, 4)
    assert loss.nans == 2
    only = got[("only", "nan")]
    assert math.isnan(only.last) and math.isnan(only.min) and math.isnan(only.max)
    assert only.nans == 1
    store.append_scalars(task_id, reports("clean", "x", [1.0]))
    assert {m.series: m.nans for m in store.scalar_summary([task_id])}["x"] == 0


def test_scalar_summary_filters_by_title_and_series(store: Store) -> None:
    a, b = (task_in(store, Status.running, n) for n in "ab")
    for t in (a, b):
        store.append_scalars(t, [("loss", "train", 0, 1.0, 0.0), ("loss", "val", 0, 2.0, 0.0),
                                 ("acc", "val", 0, 3.0, 0.0)])

    assert set(summary_of(store, [a, b], title="loss")) == {
        (a, "loss", "train"), (a, "loss", "val"), (b, "loss", "train"), (b, "loss", "val")}
    assert set(summary_of(store, [a, b], series="val")) == {
        (a, "loss", "val"), (a, "acc", "val"), (b, "loss", "val"), (b, "acc", "val")}
    assert summary_of(store, [a, b], title="acc", series="val") == {
        (a, "acc", "val"): (3.0, 3.0, 3.0, 0, 1), (b, "acc", "val"): (3.0, 3.0, 3.0, 0, 1)}
    assert store.scalar_summary([a, b], title="nope") == []


def scalar(iteration: int, value: float, title: str = "loss", series: str = "train"
           ) -> ScalarReport:
    return ScalarReport(title, series, iteration, value, 0.0)


def test_scalar_summary_with_budgets_counts_each_task_up_to_its_first_report_at_the_budget(
        store: Store) -> None:
    # Given tasks that went on reporting after their iteration budget (the stop travels)
    a, b, c, d, e = (task_in(store, Status.running, n) for n in "abcde")
    store.append_scalars(a, [scalar(1, 5.0), scalar(2, math.nan), scalar(3, 3.0),
                             scalar(4, 0.5), scalar(2, 9.0)])  # budget 3: cut after 3.0
    store.append_scalars(b, [scalar(1, 2.0), scalar(5, 4.0), scalar(3, 1.0)])  # 5 >= 3 first
    store.append_scalars(c, [scalar(1, 7.0), scalar(2, 6.0)])  # budget 9, never reached
    store.append_scalars(d, [scalar(1, 1.0), scalar(2, 0.0)])  # no budget
    store.append_scalars(e, [scalar(0, 8.0), scalar(3, math.nan), scalar(4, 3.0)])
    budgets = {a: 3, b: 3, c: 9, e: 3}

    got = {m.task_id: m for m in store.scalar_summary([a, b, c, d, e], budgets=budgets)}

    # Then only the reports up to and including the first at or past the budget count
    assert summary_of(store, [a, b, c, d, e], budgets=budgets) == {
        (a, "loss", "train"): (3.0, 3.0, 5.0, 3, 3),
        (b, "loss", "train"): (4.0, 2.0, 4.0, 5, 2),
        (c, "loss", "train"): (6.0, 6.0, 7.0, 2, 2),
        (d, "loss", "train"): (0.0, 0.0, 1.0, 2, 2),
        (e, "loss", "train"): (pytest.approx(math.nan, nan_ok=True), 8.0, 8.0, 3, 2),
    }
    assert (got[a].nans, got[e].nans) == (1, 1)
    # Every task on one budget (a plain bound), and no budget at all, read alike.
    assert summary_of(store, [a, b], budgets={a: 3, b: 3}) == {
        k: v for k, v in summary_of(store, [a, b, c, d, e], budgets=budgets).items()
        if k[0] in (a, b)}
    assert summary_of(store, [a], budgets={}) == summary_of(store, [a])
    assert summary_of(store, [a], budgets={a: 3})[(a, "loss", "train")][4] == 3


def test_scalar_summary_budget_series_ends_what_counts_of_every_series(store: Store) -> None:
    # Given a job reporting two series, the primary ("loss/val") reaching budget 3 first
    task_id = task_in(store, Status.running)
    store.append_scalars(task_id, [
        scalar(1, 0.9, "loss", "val"), scalar(1, 0.1, "acc", "val"),
        scalar(2, 0.8, "loss", "val"), scalar(2, 0.2, "acc", "val"),
        scalar(3, 0.7, "loss", "val"), scalar(3, 0.3, "acc", "val"),
        scalar(4, 0.6, "loss", "val"), scalar(4, 0.4, "acc", "val")])

    # When the primary series decides, the accuracy after its report at 3 does not count,
    # summarized alone or with the rest
    cut = {"budgets": {task_id: 3}, "budget_series": ("loss", "val")}
    assert summary_of(store, [task_id], title="acc", **cut) == {
        (task_id, "acc", "val"): (0.2, 0.1, 0.2, 2, 2)}
    assert summary_of(store, [task_id], **cut) == {
        (task_id, "acc", "val"): (0.2, 0.1, 0.2, 2, 2),
        (task_id, "loss", "val"): (0.7, 0.7, 0.9, 3, 3)}
    # Without it each series is cut at its own report at the budget
    assert summary_of(store, [task_id], title="acc", budgets={task_id: 3}) == {
        (task_id, "acc", "val"): (0.3, 0.1, 0.3, 3, 3)}


# ----- logs ----------------------------------------------------------------------------


def test_append_logs_then_read_logs_returns_them_oldest_first(store: Store) -> None:
    task_id = task_in(store, Status.running)
    other = task_in(store, Status.running, "other")
    lines = [(1.0, "stdout", "first"), (2.0, "stderr", "ünïcode ✓"), (3.0, "stdout", "")]
    assert store.append_logs(task_id, lines) == 3
    assert store.append_logs(other, [(1.5, "stdout", "not mine")]) == 1
    assert store.append_logs(task_id, []) == 0

    got = store.read_logs(task_id)

    assert [(x.time, x.stream, x.text) for x in got] == lines
    assert all(x.task_id == task_id for x in got)
    assert [x.id for x in got] == sorted({x.id for x in got})


def test_a_log_line_with_a_nul_byte_is_stored_with_a_replacement_character(
        store: Store) -> None:
    # Given a running attempt whose script printed binary output (PostgreSQL refuses NUL)
    task_id = claimed_task(store, "agent-1")
    # When its batch is written
    store.append_batch(task_id, attempt=1, logs=[(1.0, "stdout", "a\x00b")], seq=1)
    # Then it is stored, not refused (a refused batch would hold back the outcome)
    assert [x.text for x in store.read_logs(task_id)] == ["a\ufffdb"]


def test_a_value_the_database_refuses_is_a_store_refused_value(store: Store) -> None:
    # A writer that retries every failed write tells this one apart: it fails every time
    from hpo.errors import StoreRefusedValue

    task_id = claimed_task(store, "agent-1")
    if store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite keeps any length and any integer")
    with pytest.raises(StoreRefusedValue):
        store.append_batch(task_id, attempt=1, seq=1,
                           scalars=[ScalarReport("t" * 300, "s", 0, 1.0, 1.0)])


def test_read_logs_after_a_cursor_returns_only_newer_lines(store: Store) -> None:
    task_id = task_in(store, Status.running)
    store.append_logs(task_id, [(float(i), "stdout", f"line {i}") for i in range(3)])
    first = store.read_logs(task_id)
    cursor = first[-1].id
    assert store.read_logs(task_id, after=cursor) == []

    store.append_logs(task_id, [(float(i), "stdout", f"line {i}") for i in range(3, 6)])

    assert [x.text for x in store.read_logs(task_id, after=cursor)] == [
        "line 3", "line 4", "line 5"]
    assert [x.text for x in store.read_logs(task_id, after=first[0].id, limit=2)] == [
        "line 1", "line 2"]


def test_tail_logs_returns_the_last_lines_oldest_first(store: Store) -> None:
    task_id = task_in(store, Status.running)
    other = task_in(store, Status.running, "other")
    store.append_logs(task_id, [(float(i), "stdout", f"line {i}") for i in range(5)])
    store.append_logs(other, [(9.0, "stdout", "other line")])

    assert [x.text for x in store.tail_logs(task_id, 2)] == ["line 3", "line 4"]
    assert [x.text for x in store.tail_logs(task_id, 50)] == [f"line {i}" for i in range(5)]
    assert store.tail_logs(task_in(store, Status.running, "quiet"), 3) == []


# ----- workers -------------------------------------------------------------------------


def test_heartbeat_registers_a_worker_then_updates_it(store: Store, clock: Clock) -> None:
    store.heartbeat("w1", queues=["gpu"], slots=["0", "1"], host="node1", pid=42)
    started = clock.t
    clock.advance(15)

    store.heartbeat("w1", queues=["gpu", "cpu"], slots=["0"], running=["t1"], host="node1",
                    pid=43)

    (worker,) = store.list_workers()
    assert (worker.name, worker.queues, worker.slots, worker.running) == (
        "w1", ["gpu", "cpu"], ["0"], ["t1"])
    assert (worker.host, worker.pid) == ("node1", 43)
    assert (worker.started_at, worker.last_heartbeat) == (started, clock.t)


def test_list_workers_lists_every_worker_by_name_and_remove_worker_drops_one(
        store: Store) -> None:
    for name in ("zeta", "alpha", "mid"):
        store.heartbeat(name)
    assert [w.name for w in store.list_workers()] == ["alpha", "mid", "zeta"]
    alpha = store.list_workers()[0]
    assert (alpha.queues, alpha.slots, alpha.running, alpha.host, alpha.pid) == (
        [], [], [], None, None)

    store.remove_worker("mid")
    store.remove_worker("never registered")

    assert [w.name for w in store.list_workers()] == ["alpha", "zeta"]


def test_a_removed_worker_is_kept_stopped_for_a_while_then_dropped(
        store: Store, clock: Clock) -> None:
    store.heartbeat("w1", queues=["gpu"], running=["t1"], host="node1")
    store.heartbeat("w2")
    clock.advance(10)
    store.remove_worker("w1")
    stopped_at = clock.t
    clock.advance(50)

    # Gone for the reaper and `hpo workers`; listed, stopped and when, on request
    assert [w.name for w in store.list_workers()] == ["w2"]
    w1, w2 = store.list_workers(stopped_within=3600)
    assert (w1.name, w1.stopped_at, w1.queues, w1.host, w1.running) == (
        "w1", stopped_at, ["gpu"], "node1", [])
    assert w2.stopped_at is None
    assert [w.name for w in store.list_workers(stopped_within=30)] == ["w2"]

    # A second remove keeps the first stop's time; a new start under the name is live
    store.remove_worker("w1")
    assert store.list_workers(stopped_within=3600)[0].stopped_at == stopped_at
    store.heartbeat("w1")
    assert [w.name for w in store.list_workers()] == ["w1", "w2"]

    # A row stopped longer than STOPPED_WORKERS_KEPT_S goes when another agent stops
    store.remove_worker("w1")
    clock.advance(STOPPED_WORKERS_KEPT_S + 1)
    store.remove_worker("w2")
    assert [w.name for w in store.list_workers(stopped_within=10 * STOPPED_WORKERS_KEPT_S)
            ] == ["w2"]


def lost_ids(store: Store, timeout: float) -> set[str]:
    return {t.id for t in store.lost_tasks(timeout)}


def test_a_running_task_whose_worker_went_silent_is_lost(store: Store, clock: Clock) -> None:
    store.heartbeat("w1")
    task_id = claimed_task(store, "w1")
    clock.advance(61)
    assert lost_ids(store, 60) == {task_id}
    assert store.lost_tasks(60)[0].worker == "w1"


def test_a_running_task_whose_worker_keeps_beating_is_not_lost(
        store: Store, clock: Clock) -> None:
    store.heartbeat("w1")
    task_id = claimed_task(store, "w1")
    clock.advance(30)
    assert lost_ids(store, 60) == set()
    # a heartbeat renews the worker: 50 + 50 seconds, never 60 in silence
    clock.advance(20)
    store.heartbeat("w1", running=[task_id])
    clock.advance(50)
    assert lost_ids(store, 60) == set()
    # the same state is lost under a shorter timeout
    assert lost_ids(store, 10) == {task_id}


def test_a_running_task_whose_worker_is_not_registered_is_lost(
        store: Store, clock: Clock) -> None:
    ghost = claimed_task(store, "ghost")
    removed = claimed_task(store, "w1", "removed")
    clock.advance(61)  # past both claims' own lease
    store.heartbeat("w1")
    assert lost_ids(store, 60) == {ghost}

    store.remove_worker("w1")

    assert lost_ids(store, 60) == {ghost, removed}


def test_a_task_claimed_after_its_worker_s_last_heartbeat_is_not_lost(
        store: Store, clock: Clock) -> None:
    # Given a worker whose last heartbeat is old (a host back from a partition)
    store.heartbeat("w1")
    clock.advance(100)
    # When it claims a task before its next heartbeat
    task_id = claimed_task(store, "w1")
    # Then the claim proves it alive: the task is not lost until its own lease runs out
    assert lost_ids(store, 60) == set()
    clock.advance(61)
    assert lost_ids(store, 60) == {task_id}


def test_only_running_tasks_of_a_worker_are_ever_lost(store: Store, clock: Clock) -> None:
    # Given a worker that went silent long ago...
    store.heartbeat("w1")
    running = claimed_task(store, "w1", "running")
    finished = claimed_task(store, "w1", "finished")
    assert store.finish(finished, 1, Status.completed)
    requeued = claimed_task(store, "w1", "requeued")
    assert store.requeue(requeued, 1)
    # ...and a task run by hand, which has no worker at all
    by_hand = task_in(store, Status.running, "by hand")
    clock.advance(3600)

    assert lost_ids(store, 60) == {running}
    assert by_hand not in lost_ids(store, 0)


# ----- fencing: an attempt writes only while it owns its task --------------------------

WRITES: dict[str, Callable[[Store, str, int | None], object]] = {
    "scalars": lambda store, task_id, attempt: store.append_scalars(
        task_id, reports("loss", "train", [float(attempt or 0)]), attempt=attempt),
    "logs": lambda store, task_id, attempt: store.append_logs(
        task_id, [(0.0, "stdout", f"by {attempt}")], attempt=attempt),
    "parameters": lambda store, task_id, attempt: store.set_parameters(
        task_id, {"General/by": attempt or 0}, attempt=attempt),
}


def written(store: Store, task_id: str, kind: str) -> list[Any]:
    """Who wrote what of ``kind``: the attempts (or text) the writes above left."""
    if kind == "scalars":
        return [(s.attempt, s.value) for s in store.task_scalars(task_id)]
    if kind == "logs":
        return [line.text for line in store.read_logs(task_id)]
    by = store.get_task(task_id).parameters.get("General/by")
    return [] if by is None else [by]


def reclaimed_task(store: Store) -> str:
    """A task whose attempt 1 was presumed lost, re-queued and claimed again (attempt 2)."""
    task_id = claimed_task(store, "w1")
    assert store.requeue(task_id, 1)
    assert store.claim(task_id, "w2") == 2
    return task_id


@pytest.mark.parametrize("kind", list(WRITES))
def test_a_stale_attempt_s_writes_are_refused_after_a_requeue_and_a_new_claim(
        store: Store, kind: str) -> None:
    # Given attempt 1 re-queued and the task claimed again as attempt 2
    task_id = reclaimed_task(store)
    # When attempt 1 wakes and writes, it is refused and nothing of it is stored
    with pytest.raises(LostOwnership, match="attempt 1 no longer owns"):
        WRITES[kind](store, task_id, 1)
    assert written(store, task_id, kind) == []
    # And the owner's writes are accepted
    WRITES[kind](store, task_id, 2)
    assert written(store, task_id, kind) == {
        "scalars": [(2, 2.0)], "logs": ["by 2"], "parameters": [2]}[kind]


@pytest.mark.parametrize("kind", list(WRITES))
def test_an_attempt_s_writes_are_refused_while_its_task_is_requeued_and_after_it_ended(
        store: Store, kind: str) -> None:
    requeued = claimed_task(store, "w1", "requeued")
    assert store.requeue(requeued, 1)
    finished = claimed_task(store, "w1", "finished")
    WRITES[kind](store, finished, 1)  # while it owns the task
    assert store.finish(finished, 1, Status.completed)
    for task_id in (requeued, finished):
        with pytest.raises(LostOwnership):
            WRITES[kind](store, task_id, 1)
    assert written(store, requeued, kind) == []
    assert len(written(store, finished, kind)) == 1


@pytest.mark.parametrize("kind", list(WRITES))
def test_unfenced_writes_are_accepted_in_any_status(store: Store, kind: str) -> None:
    # A script run by hand, the controller: no attempt, no fence
    for status in (Status.created, Status.running, Status.completed):
        task_id = task_in(store, status, f"unfenced {status.value}")
        WRITES[kind](store, task_id, None)
        assert len(written(store, task_id, kind)) == 1


def test_a_fenced_write_to_an_unknown_task_raises_task_not_found(store: Store) -> None:
    for write in WRITES.values():
        with pytest.raises(TaskNotFound):
            write(store, "0" * 32, 1)


# ----- opening a store ----------------------------------------------------------------


def test_opening_a_store_again_keeps_its_tasks_and_schema_version(store_url: str) -> None:
    first = open_store(store_url)
    task_id = first.create_task("proj", "kept").id
    first.close()

    again = open_store(store_url)
    try:
        assert again.get_task(task_id).name == "kept"
    finally:
        again.close()
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(select(schema.meta.c.value).where(
                schema.meta.c.key == "schema_version")).scalar_one()
    finally:
        engine.dispose()
    assert int(version) == schema.SCHEMA_VERSION


def test_a_store_with_a_newer_schema_version_is_refused_naming_both_versions(
        store_url: str) -> None:
    # Given a store whose schema version was bumped to 99 by a future hpo
    open_store(store_url).close()
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            bumped = conn.execute(update(schema.meta).where(
                schema.meta.c.key == "schema_version").values(value="99")).rowcount
    finally:
        engine.dispose()
    assert bumped == 1

    # When it is opened, Then it is refused with both versions in one line
    with pytest.raises(SchemaVersionError) as raised:
        open_store(store_url)

    message = str(raised.value)
    assert "\n" not in message
    numbers = re.findall(r"\d+", message.replace(safe_url(store_url), "<url>"))
    assert "99" in numbers
    assert str(schema.SCHEMA_VERSION) in numbers
    assert isinstance(raised.value, StoreError)


def schema_version_2() -> tuple[MetaData, Table]:
    """The tables as hpo created them at schema version 2: hpo_tasks had no cloned_from
    (a clone said "cloned from <id>" in its comment) and no batch_seq (version 4),
    hpo_workers no stopped_at (version 6)."""
    old = MetaData()
    for table in schema.metadata.sorted_tables:
        if table.name not in (schema.tasks.name, schema.workers.name):
            table.to_metadata(old)
    tasks = Table(schema.tasks.name, old, *(
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in schema.tasks.columns if c.name not in ("cloned_from", "batch_seq")))
    Table(schema.workers.name, old, *(  # no stopped_at (version 6)
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in schema.workers.columns if c.name != "stopped_at"))
    return old, tasks


def test_a_version_2_store_is_migrated_in_place_and_its_clones_know_their_source(
        store_url: str) -> None:
    # Given a store created by hpo at schema version 2, with a template, a clone of it
    # (comment written by clone_task), and a task whose own comment only looks alike
    engine = create_engine(store_url)
    old, old_tasks = schema_version_2()
    source, clone, lookalike = "a" * 32, "b" * 32, "c" * 32
    try:
        schema.metadata.drop_all(engine)  # PostgreSQL: this run's tables are at version 3
        old.create_all(engine)
        with engine.begin() as conn:
            conn.execute(old.tables[schema.meta.name].insert().values(
                key="schema_version", value="2"))
            conn.execute(old_tasks.insert(), [
                {"id": task_id, "project": "p", "name": "train", "type": "training",
                 "status": "created", "tags": [], "parameters": {}, "attempt": 0,
                 "stop_requested": False, "comment": comment, "created_at": 1.0,
                 "updated_at": 1.0}
                for task_id, comment in ((source, None), (clone, f"cloned from {source}"),
                                         (lookalike, "cloned from my notes, by hand"))])
            conn.execute(old.tables[schema.workers.name].insert().values(
                name="old-agent", queues=[], slots=[], running=[], started_at=1.0,
                last_heartbeat=1.0))
    finally:
        engine.dispose()

    # When this hpo opens it
    store = open_store(store_url)
    try:
        # Then the column is there, the old clone knows its source and nothing else does
        assert store.get_task(clone).cloned_from == source
        assert store.get_task(clone).comment == f"cloned from {source}"  # left as it was
        assert store.get_task(source).cloned_from is None
        assert store.get_task(lookalike).cloned_from is None
        # And new clones work as in a new store
        assert store.clone_task(source).cloned_from == source
        # An agent registered before version 6 is still registered (not stopped)
        assert [(w.name, w.stopped_at) for w in store.list_workers()] == [("old-agent", None)]
    finally:
        store.close()
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(select(schema.meta.c.value).where(
                schema.meta.c.key == "schema_version")).scalar_one()
            columns = {c["name"] for c in inspect(conn).get_columns(schema.tasks.name)}
            worker_columns = {c["name"] for c in
                              inspect(conn).get_columns(schema.workers.name)}
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert int(version) == schema.SCHEMA_VERSION == 6
    assert {"cloned_from", "batch_seq"} <= columns
    assert "stopped_at" in worker_columns  # version 6's
    assert {schema.reports.name, schema.artifacts.name} <= tables  # version 5's

    # And opening it again changes nothing (the migration runs once)
    open_store(store_url).close()
    again = open_store(store_url)
    try:
        assert again.get_task(clone).cloned_from == source
    finally:
        again.close()


def test_an_unreachable_store_raises_store_unavailable_with_a_one_line_message() -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/x"
    with pytest.raises(StoreUnavailable) as raised:
        open_store(url)
    message = str(raised.value)
    assert message and "\n" not in message
    assert "127.0.0.1:1" in message
    assert "secret" not in message


@pytest.mark.parametrize("url", ["not a url", "nosuchdialect://x/y"])
def test_a_malformed_or_unsupported_url_raises_store_unavailable(url: str) -> None:
    with pytest.raises(StoreUnavailable) as raised:
        open_store(url)
    assert "\n" not in str(raised.value)


def test_a_sqlite_store_in_a_path_that_cannot_exist_raises_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        open_store("sqlite:////dev/null/not-a-dir/store.db")


def test_a_database_error_surfaces_as_a_one_line_store_error(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two tasks created with the same id (a primary key violation)
    fixed_task_ids(monkeypatch, A_IDS[0], A_IDS[0])
    store.create_task("proj", "first")
    with pytest.raises(StoreError) as raised:
        store.create_task("proj", "second")
    assert not isinstance(raised.value, StoreUnavailable)
    assert "\n" not in str(raised.value)
    assert store.get_task(A_IDS[0]).name == "first"


# ----- concurrency with real processes -------------------------------------------------
# Module-level functions, so the 'spawn' start method can pickle them. Each process
# opens its own store, waits at a barrier so that all of them start together, and puts
# (name, "ok", result) or (name, "error", traceback) on the results queue.

BARRIER_TIMEOUT_S = 60


def _claim_all(url: str, task_ids: list[str], worker: str, barrier: Any,
               results: Any) -> None:
    try:
        store = open_store(url)
        try:
            ids = list(task_ids)
            random.Random(worker).shuffle(ids)
            barrier.wait(BARRIER_TIMEOUT_S)
            won = {}
            for task_id in ids:
                attempt = store.claim(task_id, worker)
                if attempt is not None:
                    won[task_id] = attempt
        finally:
            store.close()
        results.put((worker, "ok", won))
    except BaseException:
        barrier.abort()
        results.put((worker, "error", traceback.format_exc()))


def _append_batches(url: str, shared_id: str, own_id: str, name: str, batches: int,
                    batch_size: int, barrier: Any, results: Any) -> None:
    try:
        store = open_store(url)
        try:
            barrier.wait(BARRIER_TIMEOUT_S)
            for b in range(batches):
                batch = [ScalarReport("loss", name, b * batch_size + i,
                                      float(b * batch_size + i), time.time())
                         for i in range(batch_size)]
                store.append_scalars(shared_id, batch)
                store.append_scalars(own_id, batch)
        finally:
            store.close()
        results.put((name, "ok", None))
    except BaseException:
        barrier.abort()
        results.put((name, "error", traceback.format_exc()))


@pytest.mark.timeout(120)
def test_eight_processes_claiming_200_tasks_claim_each_exactly_once(
        store: Store, store_url: str) -> None:
    # Given 200 queued tasks
    task_ids = []
    for i in range(200):
        task_id = store.create_task("proj", f"t{i}").id
        store.enqueue(task_id, "default")
        task_ids.append(task_id)
    workers = [f"worker-{n}" for n in range(8)]

    # When 8 processes each try to claim every one of them, in their own order
    won = run_together(_claim_all, {w: (store_url, task_ids, w) for w in workers})

    # Then every task has exactly one winner, at attempt 1
    claims = Counter(task_id for w in workers for task_id in won[w])
    assert set(claims) == set(task_ids)
    assert [c for c in claims.values() if c != 1] == []
    assert sum(len(won[w]) for w in workers) == 200
    assert {attempt for w in workers for attempt in won[w].values()} == {1}
    assert sum(1 for w in workers if won[w]) > 1, "the processes did not overlap"
    # And the store agrees: all running, attempt 1, owned by the process that won it
    winner = {task_id: w for w in workers for task_id in won[w]}
    for task in store.get_tasks(task_ids):
        assert (task.status, task.attempt, task.worker) == (
            Status.running, 1, winner[task.id])
    assert store.count_tasks(status=[Status.running]) == 200


@pytest.mark.timeout(120)
def test_four_processes_appending_scalars_at_once_lose_none(
        store: Store, store_url: str) -> None:
    batches, batch_size = 50, 20
    per_writer = batches * batch_size
    shared = task_in(store, Status.running, "shared")
    names = [f"writer-{n}" for n in range(4)]
    own = {name: task_in(store, Status.running, name) for name in names}

    # When 4 processes each append 50 batches of 20 to the shared task and to their own
    run_together(_append_batches, {
        name: (store_url, shared, own[name], name, batches, batch_size) for name in names})

    # Then every report is there exactly once, with a unique id
    everything = store.read_scalars({shared: 0, **{own[n]: 0 for n in names}})
    assert len(everything) == 2 * len(names) * per_writer
    assert len({s.id for s in everything}) == len(everything)
    in_shared = store.task_scalars(shared)
    assert len(in_shared) == len(names) * per_writer
    # the writers really overlapped: in id order, the shared task's series interleave
    switches = sum(1 for x, y in itertools.pairwise(in_shared) if x.series != y.series)
    assert switches > len(names) - 1, "the processes did not overlap"
    for name in names:
        mine = [s for s in in_shared if s.series == name]
        assert sorted(s.iteration for s in mine) == list(range(per_writer))
        own_rows = store.task_scalars(own[name])
        assert len(own_rows) == per_writer
        assert {s.series for s in own_rows} == {name}
        # one writer per task appends in order: its ids grow with its iterations
        assert [s.iteration for s in own_rows] == list(range(per_writer))
    summary = summary_of(store, [shared, *own.values()])
    for name in names:
        expected = (per_writer - 1.0, 0.0, per_writer - 1.0, per_writer - 1, per_writer)
        assert summary[(shared, "loss", name)] == expected
        assert summary[(own[name], "loss", name)] == expected


# ----- a run's batch: scalars, logs and parameters in one fenced transaction ----------

def _batch(store: Store, task_id: str, attempt: int | None, tag: str,
           parameters: dict[str, Any] | None = None) -> int:
    return store.append_batch(
        task_id, attempt=attempt,
        scalars=reports("loss", "train", [1.0, 2.0]),
        logs=[(0.0, "stdout", f"line {tag}")],
        parameters={"General/by": tag} if parameters is None else parameters)


def _owner_checks(store: Store) -> tuple[list[str], Callable[[], None]]:
    """The row locks taken (PostgreSQL: the FOR SHARE / FOR UPDATE of each statement;
    SQLite: none) and the write transactions opened, while it listens."""
    from sqlalchemy import event

    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        for lock in ("FOR SHARE", "FOR UPDATE"):
            if lock in statement.upper():
                seen.append(lock)

    write = store._write

    def counted_write() -> Any:
        seen.append("transaction")
        return write()

    event.listen(store.engine, "before_cursor_execute", on_execute)
    store._write = counted_write  # type: ignore[method-assign]

    def stop() -> None:
        event.remove(store.engine, "before_cursor_execute", on_execute)
        del store._write

    return seen, stop


def test_a_batch_is_written_whole_in_one_transaction_with_one_owner_check(
        store: Store) -> None:
    task_id = claimed_task(store, "w1")
    seen, stop = _owner_checks(store)
    try:
        assert _batch(store, task_id, 1, "one") == 2
        with_params = list(seen)
        seen.clear()
        assert _batch(store, task_id, 1, "two", parameters={}) == 2
        without_params = list(seen)
    finally:
        stop()
    # one transaction each; on PostgreSQL one lock, exclusive only for parameters
    postgres = store.dialect == "postgresql"
    assert with_params == ["transaction", *(["FOR UPDATE"] if postgres else [])]
    assert without_params == ["transaction", *(["FOR SHARE"] if postgres else [])]
    assert [(s.attempt, s.value) for s in store.task_scalars(task_id)] == [
        (1, 1.0), (1, 2.0), (1, 1.0), (1, 2.0)]
    assert [line.text for line in store.read_logs(task_id)] == ["line one", "line two"]
    assert store.get_task(task_id).parameters["General/by"] == "one"


def test_a_refused_batch_stores_nothing_of_any_kind(store: Store) -> None:
    task_id = reclaimed_task(store)
    store.set_parameters(task_id, {"General/by": "before"})
    with pytest.raises(LostOwnership, match="attempt 1 no longer owns"):
        _batch(store, task_id, 1, "stale")
    assert store.task_scalars(task_id) == []
    assert store.read_logs(task_id) == []
    assert store.get_task(task_id).parameters["General/by"] == "before"
    # the owner's batch is accepted, its parameters merged into the others
    assert _batch(store, task_id, 2, "owner", {"General/other": 3}) == 2
    assert store.get_task(task_id).parameters == {"General/by": "before",
                                                  "General/other": 3}
    assert [line.text for line in store.read_logs(task_id)] == ["line owner"]


def test_a_batch_of_one_kind_an_empty_one_and_an_unfenced_one(store: Store) -> None:
    task_id = claimed_task(store, "w1")
    assert store.append_batch(task_id, attempt=1, logs=[(0.0, "stderr", "only")]) == 0
    assert store.append_batch(task_id, attempt=1) == 0
    assert store.task_scalars(task_id) == []
    assert [line.text for line in store.read_logs(task_id)] == ["only"]
    done = task_in(store, Status.completed, "by hand")
    assert _batch(store, done, None, "unfenced") == 2
    assert [s.attempt for s in store.task_scalars(done)] == [0, 0]
    with pytest.raises(TaskNotFound):
        _batch(store, "0" * 32, 1, "nobody")
    with pytest.raises(TaskNotFound):
        _batch(store, "0" * 32, None, "nobody")


def test_a_numbered_batch_sent_again_is_stored_once_and_a_new_attempt_counts_anew(
        store: Store) -> None:
    # Given an attempt whose batch 1 was stored (the reply lost: the writer sends it again)
    task_id = claimed_task(store, "w1")
    report = [("loss", "train", 0, 1.0, 1.0)]
    assert store.append_batch(task_id, attempt=1, scalars=report, seq=1) == 1
    # When it is sent again, then batch 2, then 2 again
    assert store.append_batch(task_id, attempt=1, scalars=report, seq=1) == 0
    assert store.append_batch(task_id, attempt=1, scalars=report,
                              logs=[(1.0, "stdout", "two")], seq=2) == 1
    assert store.append_batch(task_id, attempt=1, scalars=report,
                              logs=[(1.0, "stdout", "two")], seq=2) == 0
    # Then each is stored once
    assert len(store.task_scalars(task_id)) == 2
    assert [line.text for line in store.read_logs(task_id)] == ["two"]
    # And the next attempt numbers its batches from 1 again
    assert store.requeue(task_id, 1)
    assert store.claim(task_id, "w2") == 2
    assert store.append_batch(task_id, attempt=2, scalars=report, seq=1) == 1
    # A stale attempt's resend is refused, not skipped: with a number the new attempt has
    # not reached, and with one it has (not taken for the new attempt's resend)
    with pytest.raises(LostOwnership):
        store.append_batch(task_id, attempt=1, scalars=report, seq=3)
    with pytest.raises(LostOwnership):
        store.append_batch(task_id, attempt=1, scalars=report, seq=1)
    # And once the owner has ended the task, its own resend is refused too
    assert store.finish(task_id, 2, Status.completed)
    with pytest.raises(LostOwnership):
        store.append_batch(task_id, attempt=2, scalars=report, seq=1)
    assert [s.attempt for s in store.task_scalars(task_id)] == [1, 1, 2]


def test_a_batch_writes_parameters_only_when_they_change_what_the_row_holds(
        store: Store, clock: Clock) -> None:
    # Given a claimed task holding Args/lr 0.1 and Args/n 1 (an int)
    task_id = store.create_task("proj", "job", parameters={"Args/lr": 0.1, "Args/n": 1}).id
    store.enqueue(task_id, "default")
    assert store.claim(task_id, "w1") == 1
    claimed_at = store.get_task(task_id).updated_at
    # When its script sends the same values (an argparse hook does, every run)
    clock.advance(10)
    store.append_batch(task_id, attempt=1, parameters={"Args/lr": 0.1, "Args/n": 1}, seq=1)
    store.set_parameters(task_id, {"Args/lr": 0.1}, attempt=1)
    # Then the row is not written
    assert store.get_task(task_id).updated_at == claimed_at
    # When a value equal in Python but not as stored (1.0 for 1) comes, with a new one
    clock.advance(10)
    store.append_batch(task_id, attempt=1, parameters={"Args/n": 1.0, "Args/new": "x"},
                       seq=2)
    # Then both are written, the first with its new type
    task = store.get_task(task_id)
    assert task.updated_at == clock.t
    assert task.parameters == {"Args/lr": 0.1, "Args/n": 1.0, "Args/new": "x"}
    assert type(task.parameters["Args/n"]) is float


def test_a_runs_last_write_is_three_statements_and_its_end_one_announcement(
        store: Store) -> None:
    # Given a run whose last batch holds a report and the parameters its task has
    task_id = store.create_task("proj", "job", parameters={"Args/lr": 0.1}).id
    store.enqueue(task_id, "default")
    attempt = store.claim(task_id, "w1")
    assert attempt == 1
    sent: list[str] = []

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()[:3]))

    # When the agent writes it and the run's end
    event.listen(store.engine, "before_cursor_execute", on_statement)
    try:
        assert store.finish_with_batches(task_id, attempt, Status.completed, batches=[{
            "scalars": [("loss", "total", 0, 1.0, 0.0)], "parameters": {"Args/lr": 0.1},
            "seq": 1}])
    finally:
        event.remove(store.engine, "before_cursor_execute", on_statement)
    # Then three statements did it: the fence and batch number, the report, the end
    # (its wake-up returned by it on PostgreSQL; SQLite rings after the commit), and
    # the parameters, unchanged, were not written. (BEGIN and COMMIT are the driver's,
    # not SQLAlchemy's statements: SQLite's BEGIN IMMEDIATE too, hpo.store.driver.)
    assert sent == ["UPDATE hpo_tasks SET", "INSERT INTO hpo_scalars", "UPDATE hpo_tasks SET"]
    task = store.get_task(task_id)
    assert (task.status, task.parameters) == (Status.completed, {"Args/lr": 0.1})
    assert [s.value for s in store.task_scalars(task_id)] == [1.0]


def _in_transaction(conn: Any) -> bool:
    """Whether ``conn`` is inside a transaction the server (or SQLite) began."""
    if conn.dialect.name == "sqlite":
        return bool(conn.connection.driver_connection.in_transaction)
    # A transaction's second statement comes later than the transaction began; a
    # statement in autocommit is its own transaction, begun when it came.
    conn.execute(text("SELECT 1"))
    return not conn.execute(
        text("SELECT statement_timestamp() = transaction_timestamp()")).scalar_one()


def test_reads_and_one_statement_writes_skip_begin_on_postgresql_only(store: Store) -> None:
    postgres = store.dialect == "postgresql"
    # A read (and a claim's one statement) is no transaction on PostgreSQL: each
    # statement takes its own snapshot at READ COMMITTED anyway; on SQLite a read is
    # one transaction, its statements one snapshot
    with store._read() as conn:
        assert _in_transaction(conn) is not postgres
    with store._write_one() as conn:
        assert _in_transaction(conn) is not postgres
    # A write stays one transaction, also on a pooled connection a read used before
    with store._write() as conn:
        assert _in_transaction(conn)
    with store._read() as conn:
        assert _in_transaction(conn) is not postgres


# ----- reports and artifacts (schema 5) -------------------------------------------------

def _report(kind: str = "table", title: str = "t") -> tuple[Any, ...]:
    return (kind, title, "s", 0, {"columns": ["a"], "rows": [[1]]}, None, 1.0)


def _artifact(name: str, file: str) -> tuple[Any, ...]:
    return (name, "dict", file, 2, "h" * 64, "application/json", {"k": "v"}, "{}", 1.0)


def test_reports_artifacts_and_task_fields_ride_in_a_batch_fenced_by_attempt(
        store: Store) -> None:
    # Given a task whose attempt 1 was re-queued and claimed again as attempt 2
    task_id = reclaimed_task(store)
    # When the stale attempt sends reports, an artifact and fields, they are all refused
    with pytest.raises(LostOwnership):
        store.append_batch(task_id, attempt=1, reports=[_report()],
                           artifacts=[_artifact("a", "x/1/a.json")], fields={"name": "stale"})
    assert store.task_reports(task_id) == [] and store.task_artifacts(task_id) == []
    assert store.get_task(task_id).name == "job"
    # And the owner's are stored with its attempt, tags merged, in one transaction
    store.update_task(task_id, tags=["kept"])
    store.append_batch(task_id, attempt=2, reports=[_report(), _report("plotly", "p")],
                       artifacts=[_artifact("a", "x/2/a.json")],
                       fields={"add_tags": ["new", "kept"], "comment": "c"}, seq=1)
    assert store.report_counts(task_id) == {"plotly": 1, "table": 1}
    assert {r.attempt for r in store.task_reports(task_id)} == {2}
    assert store.task_reports(task_id, kind="table")[0].payload["rows"] == [[1]]
    (artifact,) = store.task_artifacts(task_id)
    assert (artifact.name, artifact.file, artifact.metadata) == ("a", "x/2/a.json", {"k": "v"})
    task = store.get_task(task_id)
    assert (task.tags, task.comment) == (["kept", "new"], "c")
    # And an upload of a name again replaces it
    store.put_artifact(task_id, _artifact("a", "x/2/a-again.json"), attempt=2)
    assert [a.file for a in store.task_artifacts(task_id)] == ["x/2/a-again.json"]
    with pytest.raises(ConfigError, match="hpo task artifacts"):
        store.get_artifact(task_id, "missing")


def test_a_new_attempt_and_a_reset_drop_what_earlier_runs_reported(store: Store) -> None:
    task_id = claimed_task(store, "w1")
    store.append_reports(task_id, [_report()], attempt=1)
    store.put_artifact(task_id, _artifact("a", "x/1/a.json"), attempt=1)
    assert store.requeue(task_id, 1)
    assert store.claim(task_id, "w2") == 2
    store.append_reports(task_id, [_report("image")], attempt=2)
    store.drop_earlier_attempts(task_id, 2)
    assert [r.kind for r in store.task_reports(task_id)] == ["image"]
    assert store.task_artifacts(task_id) == []
    assert store.finish(task_id, 2, Status.completed)
    store.reset(task_id)
    assert store.task_reports(task_id) == []


def test_a_script_cannot_make_the_store_name_a_file_outside_the_artifact_root() -> None:
    from hpo.store import artifact_from_message, report_from_message, script_fields

    good = dict(zip(("kind", "title", "series", "iteration", "payload", "file", "time"),
                    _report(), strict=True))
    assert report_from_message(good).kind == "table"
    for bad in ({"file": "../../etc/passwd"}, {"file": "/etc/passwd"}, {"kind": "shell"},
                {"title": "x" * 300}):
        with pytest.raises(ValueError):
            report_from_message({**good, **bad})
    entry = dict(zip(("name", "type", "file", "size", "hash", "content_type", "metadata",
                      "preview", "time"), _artifact("a", "t/1/a.json"), strict=True))
    assert artifact_from_message(entry).name == "a"
    with pytest.raises(ValueError):
        artifact_from_message({**entry, "file": "t/../../x"})
    with pytest.raises(ValueError):
        script_fields({"status": "completed"})


def test_a_script_field_the_store_could_never_hold_is_refused_before_its_batch() -> None:
    # PostgreSQL refuses a NUL byte in text: a batch carrying one would be resent forever
    from hpo.store import script_fields

    for bad in ({"name": "a\x00b"}, {"comment": "a\x00b"}):
        with pytest.raises(ValueError):
            script_fields(bad)
    assert script_fields({"name": "n", "comment": None}) == {"name": "n", "comment": None}


def test_a_sqlite_write_holds_the_write_lock_from_its_begin_and_a_read_does_not(
        tmp_path: Any) -> None:
    """SQLite: a write transaction begins IMMEDIATE (hpo.store.engine, on the driver's
    cursor), so a writer elsewhere waits from the start; a read's plain BEGIN takes no
    lock."""
    import sqlite3

    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with store._write() as conn:
            conn.execute(select(schema.tasks.c.id)).all()  # a read, inside a write
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        with store._read() as conn:
            conn.execute(select(schema.tasks.c.id)).all()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()
        store.close()


def test_get_tasks_reads_any_number_of_ids_in_the_order_asked(store: Store) -> None:
    """Read in statements of at most a fixed number of ids (each padded to a power of
    two with NULLs): 1, 3, a chunk's worth and more than one chunk all come back
    whole, in the order asked, unknown ids left out."""
    from hpo.store.tasks import _IDS_PER_READ

    made = [store.create_task("proj", f"t{n}").id for n in range(3)]
    many = [*made, UNKNOWN] * ((_IDS_PER_READ + 8) // 4)  # repeats: over a chunk's worth
    assert [t.id for t in store.get_tasks(made[:1])] == made[:1]
    assert [t.id for t in store.get_tasks(made[::-1])] == made[::-1]
    assert [t.id for t in store.get_tasks(many)] == [i for i in many if i != UNKNOWN]
    assert store.get_tasks([UNKNOWN]) == []
