"""What a script run by hand looks like, so that an agent can run it again."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from hpo.defaults import GIT_TIMEOUT_S
from hpo.records import ScriptInfo

# A diff larger than this is left out rather than bloating every clone.
_MAX_DIFF_BYTES = 512 * 1024


def current_script() -> ScriptInfo:
    """The running script: entry point, working dir, argv, interpreter, git state."""
    entry = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path.cwd()
    return script_info(entry, Path.cwd(), list(sys.argv[1:]), sys.executable)


def script_info(entry: Path, working_dir: Path, argv: list[str], interpreter: str
                ) -> ScriptInfo:
    """How to run ``entry`` again, on this host or, from its git state, on another."""
    repository, root, commit, diff = git_state(entry.parent)
    return ScriptInfo(entry_point=str(entry), working_dir=str(working_dir), argv=argv,
                      interpreter=interpreter, repository=repository, commit=commit,
                      diff=diff, root=root)


def git_state(directory: Path
              ) -> tuple[str | None, str | None, str | None, str | None]:
    """(remote or top-level path, top-level path, HEAD commit, uncommitted diff), or
    Nones outside git. The diff is binary-safe, so ``git apply`` restores it exactly;
    untracked files are not in it (as with ClearML): commit them to make them travel."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True,
                timeout=GIT_TIMEOUT_S, check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None:
        return None, None, None, None
    remote = git("config", "--get", "remote.origin.url")
    commit = git("rev-parse", "--verify", "--quiet", "HEAD")  # None before a first commit
    diff = git("diff", "--binary", "HEAD") if commit else None
    if diff is not None and len(diff.encode()) > _MAX_DIFF_BYTES:
        logging.getLogger("hpo").warning(
            "the uncommitted changes in %s (%d KiB) are too large to record with the task "
            "(%d KiB at most): an agent on another host runs commit %s without them; "
            "commit them", top, len(diff.encode()) // 1024, _MAX_DIFF_BYTES // 1024,
            (commit or "")[:12])
    if diff is not None and (not diff or len(diff.encode()) > _MAX_DIFF_BYTES):
        diff = None
    return remote or top, top, commit, diff
