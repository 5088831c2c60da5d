"""The connection handling every part of the store shares."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from sqlalchemy import Connection

from hpo.store import engine as engines


class StoreBase:
    """Holds the engine; ``_read()`` and ``_write()`` give one transaction each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engines.create(url)
        engines.ensure_schema(self.engine, url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with engines.translated(self.url), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with engines.translated(self.url):
            conn = self.engine.connect().execution_options(hpo_write=True)
            with conn, conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({engines.safe_url(self.url)!r})"

    @staticmethod
    def now() -> float:
        return time.time()
