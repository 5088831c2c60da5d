"""Where hpo keeps its data, read from the environment.

``HPO_HOME`` (default ``~/.hpo``) holds the embedded store and broker files.
``HPO_STORE_URL`` is a SQLAlchemy URL; the default is a SQLite file in ``HPO_HOME``,
``postgresql+psycopg://user@host/db`` is the cluster choice.
``HPO_BROKER_URL`` is the Celery broker; the default needs no server.
Every command-line tool takes ``--store`` (and the agent ``--broker``) to override them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hpo import limits
from hpo.defaults import (
    ENV_BROKER_URL,
    ENV_LOST_AFTER_S,
    ENV_REPUBLISH_AFTER_S,
    ENV_STORE_URL,
    LOST_AFTER_S,
    MAX_SECONDS,
    REPUBLISH_AFTER_S,
    hpo_home,
)

__all__ = ["Settings", "default_broker_url", "default_store_url", "hpo_home", "lost_after_s",
           "republish_after_s"]


def lost_after_s() -> float:
    """``$HPO_LOST_AFTER_S`` (checked as ``--lost-after`` is: a bad value is one line, not
    a crash in whichever process reaps first), else ``defaults.LOST_AFTER_S``."""
    text = os.environ.get(ENV_LOST_AFTER_S)
    if not text:
        return LOST_AFTER_S
    return float(limits.parse_number(f"${ENV_LOST_AFTER_S}", text, 0, MAX_SECONDS, above=True,
                                     unit="seconds"))


def republish_after_s() -> float:
    """``$HPO_REPUBLISH_AFTER_S`` (checked as ``$HPO_LOST_AFTER_S`` is), else
    ``defaults.REPUBLISH_AFTER_S``."""
    text = os.environ.get(ENV_REPUBLISH_AFTER_S)
    if not text:
        return REPUBLISH_AFTER_S
    return float(limits.parse_number(f"${ENV_REPUBLISH_AFTER_S}", text, 0, MAX_SECONDS,
                                     above=True, unit="seconds"))

def default_store_url() -> str:
    return f"sqlite:///{hpo_home() / 'hpo.db'}"


def default_broker_url() -> str:
    return f"sqla+sqlite:///{hpo_home() / 'broker.db'}"


@dataclass(frozen=True)
class Settings:
    home: Path
    store_url: str
    broker_url: str

    @classmethod
    def load(cls, store_url: str | None = None, broker_url: str | None = None) -> Settings:
        """Settings from the environment; explicit arguments (``--store``) win."""
        return cls(
            home=hpo_home(),
            store_url=store_url or os.environ.get(ENV_STORE_URL) or default_store_url(),
            broker_url=broker_url or os.environ.get(ENV_BROKER_URL) or default_broker_url(),
        )
