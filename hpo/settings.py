"""Where hpo keeps its data, read from the environment.

``HPO_HOME`` (default ``~/.hpo``) holds the embedded store and broker files.
``HPO_STORE_URL`` is a SQLAlchemy URL; the default is a SQLite file in ``HPO_HOME``,
``postgresql+psycopg://user@host/db`` is the cluster choice.
``HPO_BROKER_URL`` is the Celery broker; the default needs no server.
Every command-line tool takes ``--store`` (and the agent ``--broker``) to override them.

A URL with a password may come from a file instead (a Docker or Kubernetes secret):
``--store-file`` / ``--broker-file``, ``$HPO_STORE_URL_FILE`` / ``$HPO_BROKER_URL_FILE``.
:meth:`UrlSetting.resolve` is the one rule of which source wins; ``Settings.load``, and
through it every process, uses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hpo import limits
from hpo.defaults import (
    ENV_BROKER_URL,
    ENV_BROKER_URL_FILE,
    ENV_LOST_AFTER_S,
    ENV_REPUBLISH_AFTER_S,
    ENV_STORE_URL,
    ENV_STORE_URL_FILE,
    ENV_WITHHELD_URLS,
    LOST_AFTER_S,
    MAX_SECONDS,
    REPUBLISH_AFTER_S,
    hpo_home,
)
from hpo.errors import ConfigError

__all__ = ["BROKER", "STORE", "Settings", "UrlSetting", "default_broker_url",
           "default_store_url", "hpo_home", "lost_after_s", "republish_after_s"]

# A URL file holds one URL: anything longer is the wrong file, not read whole.
MAX_URL_FILE_BYTES = 64 * 1024


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
class UrlSetting:
    """One URL hpo needs (the store's, the broker's) and where it may come from."""

    what: str  # for messages: "store", "broker"
    flag: str  # the command-line option; its file's is FLAG-file
    env: str
    env_file: str

    def resolve(self, value: str | None = None, file: str | Path | None = None
                ) -> tuple[str, str] | None:
        """``(url, where it came from)``, or None for the default. The first of: the
        flag's ``value``, the flag's ``file``, ``$ENV``, ``$ENV_FILE``. A value and its
        file together are a mistake (which did the user mean?), as are the two variables.
        A file's text is the URL, surrounding whitespace stripped. No message shows the
        URL: it may hold a password."""
        if value and file:
            raise ConfigError(f"{self.flag} and {self.flag}-file are both given: give one "
                              f"of them ({self.flag}-file keeps a password out of `ps`)")
        if value:
            return value, self.flag
        if file:
            return _read_url_file(self, f"{self.flag}-file", file)
        env_value, env_file = os.environ.get(self.env), os.environ.get(self.env_file)
        if env_value and env_file:
            raise ConfigError(f"${self.env} and ${self.env_file} are both set: unset one "
                              "of them")
        if env_value:
            return env_value, f"${self.env}"
        if env_file:
            return _read_url_file(self, f"${self.env_file}", env_file)
        if self.env in os.environ.get(ENV_WITHHELD_URLS, "").split(","):
            # Under an agent that kept a password from its scripts: opening the default
            # store instead would read and write the wrong data without a word.
            raise ConfigError(f"the agent running this script keeps the {self.what} URL "
                              "from it (the URL holds a password): start the agent with "
                              f"--pass-credentials to run scripts that open the {self.what}")
        return None


STORE = UrlSetting("store", "--store", ENV_STORE_URL, ENV_STORE_URL_FILE)
BROKER = UrlSetting("broker", "--broker", ENV_BROKER_URL, ENV_BROKER_URL_FILE)


def _read_url_file(setting: UrlSetting, where: str, file: str | Path) -> tuple[str, str]:
    path = limits.check_path(where, file)
    source = f"{where}={path}"
    try:
        with path.open("rb") as f:
            data = f.read(MAX_URL_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read it ({exc.strerror}): give a readable "
                          f"file that holds the {setting.what} URL") from None
    if len(data) > MAX_URL_FILE_BYTES:
        raise ConfigError(f"{source} is over {MAX_URL_FILE_BYTES // 1024} KiB: a URL file "
                          f"holds one URL, the {setting.what}'s; check the path")
    try:
        url = data.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not text: write the {setting.what} URL into "
                          "it") from None
    if not url:
        raise ConfigError(f"{source} is empty: write the {setting.what} URL into it")
    return url, source


@dataclass(frozen=True)
class Settings:
    """Where hpo's data is: ``home``, ``store_url`` and ``broker_url``. Each URL is
    resolved when it is read, not by ``load``: a process that opens only the store (a
    script's ``Task.get_task``, ``hpo task list``) is not stopped by a broker setting it
    never uses (a file it cannot read, a URL its agent withheld)."""

    home: Path
    store_given: str | None = None  # --store, or a URL given in Python
    store_file: str | Path | None = None  # --store-file
    broker_given: str | None = None
    broker_file: str | Path | None = None

    @classmethod
    def load(cls, store_url: str | None = None, broker_url: str | None = None, *,
             store_file: str | Path | None = None, broker_file: str | Path | None = None
             ) -> Settings:
        """Settings from the environment; explicit arguments (``--store``, then
        ``--store-file``) win (:meth:`UrlSetting.resolve`)."""
        return cls(hpo_home(), store_url, store_file, broker_url, broker_file)

    @property
    def store_url(self) -> str:
        found = STORE.resolve(self.store_given, self.store_file)
        return found[0] if found else default_store_url()

    @property
    def broker_url(self) -> str:
        found = BROKER.resolve(self.broker_given, self.broker_file)
        return found[0] if found else default_broker_url()
