"""Code that travels: a task registered in a git repository runs on an agent whose host
does not have the script's path, from the recorded commit with the recorded uncommitted
changes (hpo.agent.checkout). The "other host" is a folder tree where the registering
clone does not exist: the clone is moved away after the task is registered, and the
agent reaches the repository only through its "remote" (a bare repository)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpo.agent import checkout
from hpo.cli.task_cmd import script_info_for
from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import make_app
from hpo.records import ScriptInfo
from hpo.store import Store, open_store
from tests.agents import env_for, running_agent, wait_final

TRAIN = '''\
from pathlib import Path
from hpo import Task

OFFSET = 1
task = Task.init(project_name="travel", task_name="train")
params = task.connect({"x": 1.0})
scale = float(Path("data/scale.txt").read_text())  # relative to the working folder
task.get_logger().report_scalar("loss", "train", params["x"] * scale + OFFSET, 0)
'''


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, Path]:
    """(the bare "remote", a clone of it with train.py committed and an uncommitted
    change: OFFSET = 1 -> 5)."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--bare", "--quiet", "-b", "main", str(remote))
    clone = tmp_path / "alice" / "project"
    git(tmp_path, "clone", "--quiet", str(remote), str(clone))
    for key, value in (("user.email", "a@example.com"), ("user.name", "Alice")):
        git(clone, "config", key, value)
    (clone / "src").mkdir()
    (clone / "src" / "train.py").write_text(TRAIN)
    (clone / "src" / "data").mkdir()
    (clone / "src" / "data" / "scale.txt").write_text("10\n")
    git(clone, "add", ".")
    git(clone, "commit", "--quiet", "-m", "train")
    git(clone, "push", "--quiet", "origin", "main")
    train = clone / "src" / "train.py"
    train.write_text(train.read_text().replace("OFFSET = 1", "OFFSET = 5"))
    return remote, clone


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


def register(store: Store, clone: Path, x: float) -> str:
    info = script_info_for(clone / "src" / "train.py", clone / "src")
    template = store.create_task("travel", "train", script=info,
                                 parameters={"General/x": 1.0})
    return store.clone_task(template.id, parameters={"General/x": x}).id


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_task_runs_from_its_commit_and_changes_on_a_host_without_its_path(
        store, hpo_env, tmp_path, repository, queue_name):
    # Given two tasks registered in a clone with an uncommitted change
    remote, clone = repository
    tasks = [register(store, clone, x) for x in (2.0, 3.0)]
    recorded = store.get_task(tasks[0]).script
    assert recorded is not None and recorded.commit and recorded.diff
    assert (recorded.repository, recorded.root) == (str(remote), str(clone))
    # And a host where that clone does not exist
    clone.parent.rename(tmp_path / "elsewhere")
    assert not Path(recorded.entry_point).exists()

    # When an agent there runs them
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name
                       ) as agent:
        for task_id in tasks:
            dispatch.enqueue(store, make_app(broker), task_id, queue_name)
        finals = [wait_final(store, task_id) for task_id in tasks]

    # Then both ran from the commit, with the change applied, in the recorded folder
    for task, x in zip(finals, (2.0, 3.0), strict=True):
        assert task.status is Status.completed, task.status_message
        assert [s.value for s in store.task_scalars(task.id, title="loss")] == [x * 10 + 5]
    # And the code was fetched once: one mirror, one worktree for both
    cache = checkout.code_cache()
    assert len(list((cache / "mirrors").glob("*[!.lock]"))) == 1
    assert len([p for p in (cache / "trees").iterdir() if p.is_dir()]) == 1
    assert "from its recorded commit" in agent.output()


def info(remote: Path, clone: Path, **changes: str | None) -> ScriptInfo:
    fields = {"entry_point": str(clone / "src" / "train.py"),
              "working_dir": str(clone / "src"), "repository": str(remote),
              "commit": git(clone, "rev-parse", "HEAD"), "diff": None, "root": str(clone),
              "interpreter": sys.executable}
    return ScriptInfo(**{**fields, **changes})


def test_the_checkout_maps_paths_into_the_tree_and_reuses_it(repository, tmp_path):
    remote, clone = repository
    entry, workdir = checkout.materialize(info(remote, clone), tmp_path / "cache")
    assert entry.read_text() == TRAIN  # the commit, without the uncommitted change
    assert (workdir / "data" / "scale.txt").read_text() == "10\n"
    again, _ = checkout.materialize(info(remote, clone), tmp_path / "cache")
    assert again == entry


@pytest.mark.parametrize(("changes", "message"), [
    ({"repository": None}, "records no git repository and commit"),
    ({"root": None}, "registered by an older hpo"),
    ({"commit": "0" * 40}, "is not in"),
    ({"diff": "--- a/src/nothing.py\n+++ b/src/nothing.py\n@@ -1 +1 @@\n-a\n+b"},
     "do not apply on commit"),
    ({"entry_point": "/somewhere/else/train.py"}, "is outside its repository"),
])
def test_code_that_cannot_be_had_is_one_line_naming_what_is_missing(
        repository, tmp_path, changes, message):
    remote, clone = repository
    with pytest.raises(checkout.CheckoutError, match=message):
        checkout.materialize(info(remote, clone, **changes), tmp_path / "cache")


def test_a_repository_this_host_cannot_reach_says_how_to_give_access(repository, tmp_path):
    _, clone = repository
    with pytest.raises(checkout.CheckoutError, match="give this host read access"):
        checkout.materialize(info(tmp_path / "no-such.git", clone), tmp_path / "cache")
