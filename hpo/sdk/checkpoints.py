"""Checkpoints: where a task saves its state, and where a promoted task resumes from.

A script saves its state into ``task.checkpoint_dir`` and then calls
``task.save_checkpoint(iteration)``, which records (atomically) that the folder holds a
complete state at that iteration. A job that continues another one (an ASHA promotion)
gets ``task.resume_checkpoint`` (the other job's folder) and ``task.resume_iteration``
(the iteration to continue after; 0: start fresh). Folders live under
``HPO_CHECKPOINT_ROOT`` (default ``$HPO_HOME/checkpoints``), one per task id; on a
cluster that root must be shared storage. Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hpo.defaults import checkpoint_root

__all__ = ["RECORD", "checkpoint_root", "folder_of", "save_record", "saved_iteration"]

RECORD = "checkpoint.json"


def folder_of(task_id: str, root: Path | None = None) -> Path:
    return (root or checkpoint_root()) / task_id


def save_record(folder: Path, iteration: int) -> None:
    """Mark ``folder`` as holding a complete state at ``iteration`` (write + rename, so a
    reader never sees half a record)."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / (RECORD + ".tmp")
    temporary.write_text(json.dumps({"iteration": int(iteration)}))
    os.replace(temporary, folder / RECORD)


def saved_iteration(folder: Path) -> int | None:
    """The iteration ``folder`` holds a complete state of, or None."""
    try:
        return int(json.loads((folder / RECORD).read_text())["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
