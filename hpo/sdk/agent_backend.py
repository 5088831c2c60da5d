"""The SDK's side of a task run by an agent. Standard library only: importing hpo in a
training script must not pull in SQLAlchemy or Celery (see ``hpo.sdk.channel``)."""

from __future__ import annotations

import _thread
import json
import os
import sys
import threading
import time
from pathlib import Path

from hpo import defaults
from hpo.errors import ConfigError
from hpo.sdk import channel, checkpoints

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    import socket
    from typing import Any


class AgentBackend:
    """Parameters come from the spec file the agent wrote; reports go over the channel."""

    overrides = True

    def __init__(self, spec: dict[str, Any], address: str | None) -> None:
        self.task_id: str = spec["id"]
        self.project: str = spec.get("project", "")
        self.name: str = spec.get("name", "")
        self.type: str = spec.get("type", "training")
        self.attempt = int(spec.get("attempt") or 0)
        # The spec may carry tags and comment; without them these are what this run set.
        self.tags: list[str] = list(spec.get("tags") or [])
        self.comment: str | None = spec.get("comment")
        self._artifacts: dict[str, dict[str, Any]] = {}
        self._parameters: dict[str, Any] = dict(spec.get("parameters") or {})
        self.checkpoint_dir = Path(spec.get("checkpoint_dir") or checkpoints.folder_of(
            self.task_id))
        resume = spec.get("resume_checkpoint")
        self.resume_checkpoint = Path(resume) if resume else None
        self.resume_iteration = int(spec.get("resume_iteration") or 0)
        self._address = address
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        _watch_parent()

    @classmethod
    def from_env(cls) -> AgentBackend:
        path = os.environ.get(defaults.ENV_TASK_SPEC)
        if not path:
            raise ConfigError(
                f"{defaults.ENV_TASK_ID} is set but {defaults.ENV_TASK_SPEC} is not: run the "
                f"script through hpo-agent, or unset {defaults.ENV_TASK_ID} to run it by hand")
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the task spec {path}: {exc}") from None
        return cls(spec, os.environ.get(defaults.ENV_REPORT_ADDR))

    def parameters(self) -> dict[str, Any]:
        return dict(self._parameters)

    def record_parameters(self, values: dict[str, Any]) -> None:
        new = {k: v for k, v in values.items() if self._parameters.get(k, object()) != v}
        if new:
            self._parameters.update(new)
            self._send({"kind": "params", "values": new})

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        self._send({"kind": "scalar", "title": title, "series": series,
                    "iteration": int(iteration), "value": float(value), "time": time.time()})

    def report_text(self, text: str) -> None:
        # The agent already records this process's stdout in the task log.
        print(text, flush=True)

    def log_line(self, text: str) -> None:
        """A log line that is not printed (report_text with print_console=False)."""
        self._send({"kind": "log", "text": text})

    def report(self, report: dict[str, Any]) -> None:
        self._send({"kind": "report", "report": report})

    def record_artifact(self, entry: dict[str, Any]) -> None:
        self._artifacts[entry["name"]] = entry
        self._send({"kind": "artifact", "artifact": entry})

    def artifacts(self) -> list[dict[str, Any]]:
        """The artifacts this run uploaded (the spec lists none of an earlier run)."""
        return list(self._artifacts.values())

    def set_fields(self, fields: dict[str, Any]) -> None:
        """Name, tags, comment; ``add_tags`` is merged by the store with the task's."""
        self._send({"kind": "task", "fields": fields})
        self.name = fields.get("name", self.name)
        self.comment = fields.get("comment", self.comment)
        if "tags" in fields:
            self.tags = list(fields["tags"])
        self.tags += [t for t in fields.get("add_tags", []) if t not in self.tags]

    def flush(self) -> None:
        sys.stdout.flush()

    def close(self, status: str | None = None, message: str | None = None) -> None:
        # The agent owns the task's status: it reads the exit code.
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, message: dict[str, Any]) -> None:
        if not self._address:
            return
        data = channel.encode(message)
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = channel.connect(self._address)
                    data = channel.hello(self.task_id, self.attempt) + data
                self._sock.sendall(data)
            except OSError as exc:
                self._sock = None
                if not self._warned:
                    self._warned = True
                    print(f"hpo: cannot reach the agent's report channel {self._address}: "
                          f"{exc}; reports are lost", file=sys.stderr, flush=True)


def _watch_parent(period: float = defaults.PARENT_WATCH_S) -> None:
    """End this task when its agent dies: an orphan would go on computing for nobody
    while the re-queued task runs again elsewhere."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(period)
            if os.getppid() != parent:
                print("hpo: the agent running this task is gone; stopping", file=sys.stderr,
                      flush=True)
                os.kill(os.getpid(), 15)  # SIGTERM: the script may clean up
                return

    # A bare thread (daemon-like: never joined at exit): threading.Thread.start waits
    # until the new thread runs, a wait in every task's Task.init for a check due later.
    _thread.start_new_thread(watch, ())
