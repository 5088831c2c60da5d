"""``Task.upload_artifact`` and ``task.artifacts[name]``: objects kept as files under the
artifact root (``hpo.sdk.files``), each in the format ClearML gives it: a dict as JSON,
a numpy array as ``.npz``, a pandas DataFrame as ``.csv.gz``, a folder as a ``.zip``, a
file as it is, a string as text, anything else pickled. numpy and pandas are imported
only for an object that is already one of theirs.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import mimetypes
import os
import pickle
import shutil
import time
import zipfile
from pathlib import Path

from hpo import defaults
from hpo.errors import ConfigError
from hpo.sdk import files

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    from typing import Any


def serialize(task_id: str, attempt: int, name: str, obj: Any, *,
              metadata: dict[str, Any] | None = None, preview: Any = None,
              auto_pickle: bool | None = None) -> dict[str, Any]:
    """Write ``obj`` as the artifact ``name`` of this attempt; the entry the store keeps
    (``hpo.store.ArtifactEntry``'s fields)."""
    if isinstance(obj, str) and obj and len(obj) < 2048:
        scheme, sep, _ = obj.partition("://")
        if sep and scheme.isalnum():
            raise ConfigError(
                f"upload_artifact({name!r}): {obj!r} is a URL; hpo keeps artifacts in a "
                "folder (HPO_ARTIFACT_ROOT) and does not register remote objects "
                "(docs/clearml.md)")
        if Path(obj).exists():
            obj = Path(obj)
    kind, suffix, content_type, data, text = _encode(name, obj, auto_pickle)
    rel = files.relative(task_id, attempt, "artifacts", files.safe_stem(name) + suffix)
    # A file as it is is copied, not read into memory.
    size = files.copy_file(data, rel) if isinstance(data, Path) else files.write_bytes(rel, data)
    shown = str(preview) if preview is not None else text
    return {"name": name, "type": kind, "file": rel, "size": size,
            "hash": _sha256(files.resolve(rel)), "content_type": content_type,
            "metadata": {str(k): _jsonable(v) for k, v in (metadata or {}).items()},
            "preview": shown[:defaults.MAX_ARTIFACT_PREVIEW_CHARS] if shown else None,
            "time": time.time()}


def _encode(name: str, obj: Any, auto_pickle: bool | None
            ) -> tuple[str, str, str | None, bytes | Path, str]:
    """(type, suffix, content type, bytes or a file to copy, preview) of ``obj``."""
    module = type(obj).__module__.split(".")[0]
    if module == "numpy" and hasattr(obj, "ndim"):
        import numpy as np  # the object is numpy's: numpy is there

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{name: obj})
        return "numpy", ".npz", "application/numpy", buffer.getvalue(), repr(obj)
    if module == "pandas" and hasattr(obj, "to_csv") and hasattr(obj, "columns"):
        buffer = io.BytesIO()
        obj.to_csv(buffer, compression={"method": "gzip", "mtime": 0})
        return "pandas", ".csv.gz", "text/csv", buffer.getvalue(), repr(obj)
    if hasattr(obj, "save") and hasattr(obj, "mode") and module == "PIL":
        buffer = io.BytesIO()
        obj.save(buffer, format="PNG")
        return "image", ".png", "image/png", buffer.getvalue(), repr(obj)
    if isinstance(obj, dict):
        try:
            text = json.dumps(obj, sort_keys=True, indent=4)
        except (TypeError, ValueError):
            if auto_pickle is False:
                raise
        else:
            return "dict", ".json", "application/json", text.encode(), text
    if isinstance(obj, Path):
        return _encode_path(obj)
    if isinstance(obj, list | tuple) and obj and all(isinstance(p, Path) for p in obj):
        paths = [p.expanduser().absolute() for p in obj]
        common = Path(*_common_parts([p.parent.parts for p in paths]))
        data, listing = _zip([(p, p.relative_to(common).as_posix()) for p in paths
                              if p.is_file()])
        return "archive", ".zip", "application/zip", data, listing
    if isinstance(obj, str) and obj:
        return "string", ".txt", "text/plain", obj.encode(), obj
    if auto_pickle is False and obj is not None:
        raise ValueError(f"upload_artifact({name!r}): cannot store a "
                         f"{type(obj).__name__} without pickling it (auto_pickle=False)")
    return "pickle", ".pkl", "application/pickle", pickle.dumps(obj), repr(obj)


def _encode_path(path: Path) -> tuple[str, str, str | None, bytes | Path, str]:
    path = path.expanduser().absolute()
    if path.is_file():
        size = path.stat().st_size
        return ("custom", "".join(path.suffixes[-2:]), mimetypes.guess_type(path.name)[0],
                path, f"{path.name} - {size} bytes")
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file())
        data, listing = _zip([(p, p.relative_to(path).as_posix()) for p in found])
        return "archive", ".zip", "application/zip", data, listing
    raise ConfigError(f"artifact file or folder {path} not found")


def _zip(members: list[tuple[Path, str]]) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    listing = ["Archive content:"]
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED,
                         allowZip64=True) as zf:
        for source, arcname in members:
            zf.write(source, arcname=arcname)
            listing.append(f"{arcname} - {source.stat().st_size} bytes")
    return buffer.getvalue(), "\n".join(listing)


def _common_parts(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    common = parts[0]
    for p in parts[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    return common


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


class Artifact:
    """One artifact of a task, read-only, as ClearML's: ``get()`` the object back,
    ``get_local_copy()`` the path of its file (a folder for an unpacked archive)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self._entry = entry
        self._object: Any = _UNSET

    name = property(lambda self: self._entry["name"])
    type = property(lambda self: self._entry["type"])
    size = property(lambda self: self._entry["size"])
    hash = property(lambda self: self._entry["hash"])
    preview = property(lambda self: self._entry.get("preview"))
    content_type = property(lambda self: self._entry.get("content_type"))
    mode = property(lambda self: "output")

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._entry.get("metadata") or {})

    @property
    def timestamp(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._entry["time"])

    @property
    def url(self) -> str:
        """A ``file://`` URL of the stored file."""
        return files.resolve(self._entry["file"]).as_uri()

    def get_local_copy(self, extract_archive: bool = True, raise_on_error: bool = False,
                       force_download: bool = False) -> str | None:
        """The stored file's path (it is on this host's artifact root already); for an
        archive with ``extract_archive``, a folder it is unpacked into (once)."""
        path = files.resolve(self._entry["file"])
        if not path.is_file():
            if raise_on_error:
                raise ValueError(f"artifact {self.name}: its file {path} is missing (is "
                                 "HPO_ARTIFACT_ROOT the shared folder the task wrote to?)")
            return None
        if not (extract_archive and self.type == "archive"):
            return str(path)
        # Unpacked once per content (the hash), aside and then moved into place, so a
        # reader never sees half a folder.
        folder = defaults.hpo_home() / "cache" / "artifacts" / self.hash[:16]
        if not folder.is_dir():
            partial = folder.with_name(f"{folder.name}.{os.getpid()}.part")
            with zipfile.ZipFile(path) as zf:
                zf.extractall(partial)  # our own archive, written by _zip
            try:
                partial.replace(folder)
            except OSError:  # another process unpacked it first
                shutil.rmtree(partial, ignore_errors=True)
        return str(folder)

    def get(self, force_download: bool = False, deserialization_function: Any = None
            ) -> Any:
        """The object back: a dict, numpy array, DataFrame, string or unpickled object
        by its type; a ``Path`` to the file (or folder) for the others."""
        if self._object is not _UNSET and not force_download:
            return self._object
        local = self.get_local_copy(raise_on_error=True, force_download=force_download)
        assert local is not None
        if deserialization_function is not None:
            self._object = deserialization_function(Path(local).read_bytes())
        elif self.type == "numpy":
            import numpy as np

            with np.load(local) as stored:
                self._object = stored[self.name]
        elif self.type == "pandas":
            import pandas as pd

            self._object = pd.read_csv(local, index_col=[0])
        elif self.type == "dict":
            self._object = json.loads(Path(local).read_text(encoding="utf-8"))
        elif self.type == "string":
            self._object = Path(local).read_text(encoding="utf-8")
        elif self.type == "pickle":
            with open(local, "rb") as f:
                self._object = pickle.load(f)
        else:
            self._object = Path(local)
        return self._object

    def __repr__(self) -> str:
        return (f"<Artifact {self.name!r} type={self.type} size={self.size} "
                f"file={self._entry['file']}>")


_UNSET = object()
