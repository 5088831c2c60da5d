"""The artifact root: where a task's artifacts, images, media and large reports are
kept as files (``$HPO_ARTIFACT_ROOT``, else ``$HPO_HOME/artifacts``; shared storage on
a cluster, mounted on every host). The store records each file by its path relative to
the root, ``<task id>/<attempt>/<kind>/<file>``: an attempt never overwrites another's
files, and a host that mounts the root elsewhere still finds them.

A folder only: an object-store URL (``s3://``, ``gs://``) is not supported (mount it,
e.g. with s3fs, and point ``HPO_ARTIFACT_ROOT`` at the mount). Standard library only.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from hpo import defaults
from hpo.errors import ConfigError


def root() -> Path:
    path = defaults.artifact_root()
    if "://" in str(path):
        raise ConfigError(f"{defaults.ENV_ARTIFACT_ROOT}={path} is a URL: it must be a "
                          "folder (mount the bucket and name the mount)")
    return path


def relative(task_id: str, attempt: int, kind: str, filename: str) -> str:
    """Where a new file of a task goes, relative to the root."""
    return f"{task_id}/{attempt}/{kind}/{_safe(filename)}"


def unique_name(stem: str, suffix: str) -> str:
    """A file name no other report of the task takes (reports of one title and series
    at one iteration may repeat)."""
    return f"{_safe(stem)[:80]}-{uuid.uuid4().hex[:8]}{suffix}"


def resolve(rel: str) -> Path:
    """The file a recorded path names; a path that leaves the root (``..``, absolute)
    is refused: it comes from a store another process wrote."""
    base = root().resolve()
    path = (base / rel).resolve()
    if rel.startswith("/") or not path.is_relative_to(base):
        raise ConfigError(f"recorded file {rel!r} is outside the artifact root {base}")
    return path


def write_bytes(rel: str, data: bytes) -> int:
    """Write ``data`` at ``rel`` (write then rename: a reader never sees half a file)."""
    target = resolve(rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    partial.write_bytes(data)
    os.replace(partial, target)
    return len(data)


def copy_file(source: Path, rel: str) -> int:
    target = resolve(rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target.stat().st_size


def safe_stem(name: str) -> str:
    """A file name for ``name`` that no other name maps to: the name itself when it is
    usable as one, else its usable form and a hash of the original ("a/b" and "a_b"
    must not share a file)."""
    cleaned = _safe(name)
    if cleaned == name:
        return name
    import hashlib

    return f"{cleaned[:180]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _safe(name: str) -> str:
    """A name usable as one file name on every system: path separators and control
    characters become ``_``."""
    cleaned = "".join(c if c.isprintable() and c not in '/\\:*?"<>|' else "_" for c in name)
    cleaned = cleaned.strip().lstrip(".") or "_"
    return cleaned[:200]
