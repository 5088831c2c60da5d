"""The task's code on a host that does not have it: its recorded git commit, checked out
into the agent's cache, with its recorded uncommitted changes applied (as ClearML's
agent does).

The cache holds one bare mirror per repository (fetched again only when a commit is
missing) and one worktree per (commit, changes): the second task of a commit starts at
once. Slots of one agent, and agents sharing a cache, take a file lock per mirror, so a
worktree is made once and a half-made one is never used (it is built under a temporary
name, then renamed).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpo import defaults
from hpo.errors import HpoError
from hpo.records import ScriptInfo

__all__ = ["CheckoutError", "code_cache", "materialize"]


class CheckoutError(HpoError):
    """The recorded code cannot be had on this host; the message says what is missing."""


def code_cache() -> Path:
    """``$HPO_HOME/code``: local to the host, kept across runs (a cache: safe to delete)."""
    return defaults.hpo_home() / "code"


def materialize(script: ScriptInfo, cache: Path) -> tuple[Path, Path]:
    """(entry point, working folder) of ``script`` inside a checkout of its recorded
    commit with its recorded changes; the same worktree for the same code."""
    if not (script.repository and script.commit):
        raise CheckoutError(
            f"{script.entry_point} does not exist on this host, and the task records no "
            "git repository and commit to fetch it from: put the script on a shared "
            "volume or in the agent's image, or register it from a git repository")
    if not script.root:
        raise CheckoutError(
            f"{script.entry_point} does not exist on this host, and the task does not "
            "record where it sits in its repository (registered by an older hpo): "
            "register it again")
    entry = _inside(script.root, script.entry_point, "the script")
    workdir = _inside(script.root, script.working_dir, "the working folder", default=".")
    mirror = cache / "mirrors" / _digest(script.repository)
    with _locked(mirror.with_suffix(".lock")):
        _fetch(mirror, script.repository, script.commit)
        tree = cache / "trees" / f"{script.commit[:12]}-{_digest(script.diff or '')[:8]}"
        if not tree.is_dir():
            _build_tree(mirror, tree, script.commit, script.diff)
    return tree / entry, tree / workdir


def _fetch(mirror: Path, repository: str, commit: str) -> None:
    """A bare mirror of ``repository`` that holds ``commit``: cloned once, fetched
    again only when the commit is new to it."""
    if not mirror.is_dir():
        partial = mirror.with_name(mirror.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _git(None, "clone", "--mirror", "--quiet", repository, str(partial),
             failure=f"cannot fetch {repository}: give this host read access to it (a "
                     "deploy key, a token in the URL, a shared path)")
        partial.rename(mirror)
    if not _has_commit(mirror, commit):
        _git(mirror, "fetch", "--quiet", "--prune", "origin",
             failure=f"cannot fetch {repository} again for commit {commit[:12]}")
    if not _has_commit(mirror, commit):
        raise CheckoutError(f"commit {commit[:12]} is not in {repository}: push it (the task "
                            "was registered from a commit that only its author's clone has)")


def _build_tree(mirror: Path, tree: Path, commit: str, diff: str | None) -> None:
    partial = tree.with_name(tree.name + ".partial")
    if partial.exists():  # a build that died half-way: its worktree entry goes too
        shutil.rmtree(partial, ignore_errors=True)
        _git(mirror, "worktree", "prune", failure="cannot tidy the code cache")
    _git(mirror, "worktree", "add", "--detach", "--quiet", str(partial), commit,
         failure=f"cannot check out commit {commit[:12]}")
    if diff:
        _git(partial, "apply", "--whitespace=nowarn", "--binary", "-", stdin=diff + "\n",
             failure=f"the uncommitted changes recorded with the task do not apply on "
                     f"commit {commit[:12]}")
    # Ready: the rename makes it visible whole (git moves its own record of it too).
    _git(mirror, "worktree", "move", str(partial), str(tree),
         failure="cannot move the new worktree into place")


def _has_commit(mirror: Path, commit: str) -> bool:
    return subprocess.run(["git", "-C", str(mirror), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True, check=False).returncode == 0


def _git(where: Path | None, *args: str, failure: str, stdin: str | None = None) -> None:
    command = ["git", *(["-C", str(where)] if where else []), *args]
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True,
                              timeout=defaults.CHECKOUT_TIMEOUT_S, check=False,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise CheckoutError(f"{failure}: git is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise CheckoutError(f"{failure}: git took over {defaults.CHECKOUT_TIMEOUT_S:g}s"
                            ) from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise CheckoutError(f"{failure} (git: {said})")


def _inside(root: str, path: str, what: str, default: str | None = None) -> Path:
    """``path`` relative to the repository's top folder ``root``."""
    try:
        relative = Path(path).relative_to(root)
    except ValueError:
        if default is not None:
            return Path(default)
        raise CheckoutError(f"{what} {path} is outside its repository {root}: only files "
                            "of the repository travel") from None
    return relative


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
