"""What a script run by hand looks like, so that an agent can run it again."""

from __future__ import annotations

import os
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
    repository, commit, diff = git_state(entry.parent)
    return ScriptInfo(
        entry_point=str(entry),
        working_dir=os.getcwd(),
        argv=list(sys.argv[1:]),
        interpreter=sys.executable,
        repository=repository,
        commit=commit,
        diff=diff,
    )


def git_state(directory: Path) -> tuple[str | None, str | None, str | None]:
    """(remote or top-level path, HEAD commit, uncommitted diff) or Nones outside git."""
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
        return None, None, None
    remote = git("config", "--get", "remote.origin.url")
    commit = git("rev-parse", "HEAD")
    diff = git("diff", "HEAD")
    if diff is not None and (not diff or len(diff.encode()) > _MAX_DIFF_BYTES):
        diff = None
    return remote or top, commit, diff
