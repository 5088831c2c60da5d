"""An optimization's configuration and the controller's saved state, for resume."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from hpo.errors import TaskNotFound
from hpo.store import schema
from hpo.store.base import StoreBase

OPT = schema.optimizations


class OptimizationsMixin(StoreBase):
    def create_optimization(self, task_id: str, config: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(OPT.insert().values(task_id=task_id, config=config, state=None,
                                           updated_at=self.now()))

    def update_optimization_config(self, task_id: str, config: dict[str, Any]) -> None:
        self._update_optimization(task_id, config=config)

    def save_optimization_state(self, task_id: str, state: dict[str, Any]) -> None:
        """Replace the controller's saved state in one transaction."""
        self._update_optimization(task_id, state=state)

    def _update_optimization(self, task_id: str, **values: Any) -> None:
        with self._write() as conn:
            updated = conn.execute(update(OPT).where(OPT.c.task_id == task_id).values(
                updated_at=self.now(), **values)).rowcount
        if not updated:
            raise TaskNotFound(f"no optimization {task_id}: `hpo-controller list` shows them")

    def load_optimization(self, task_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(config, saved state or None)."""
        with self._read() as conn:
            row = conn.execute(select(OPT.c.config, OPT.c.state).where(OPT.c.task_id == task_id)
                               ).first()
        if row is None:
            raise TaskNotFound(f"no optimization {task_id}: `hpo-controller list` shows them")
        return row.config, row.state
