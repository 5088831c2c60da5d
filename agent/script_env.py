"""What a training script gets of its agent's environment: everything, except the store
and broker passwords.

A script is the user's code: it logs its environment, hands it to an experiment
tracker, dumps it in a crash report. So a store or broker URL that holds a password
is kept from it unless the agent runs with ``--pass-credentials`` (a script that runs
an optimization of its own needs them). A URL without a password (a SQLite path,
``redis://host``) is passed on: ``Task.get_task`` and the other store reads of the SDK
use it. The ``*_FILE`` variables are passed on only with the credentials: a path is no
secret, but it leads to one.

This keeps secrets out of a script's environment, not out of its reach: the script
runs as the agent's user, who can read the secret file. Run agents as a user of their
own to keep a hostile script out.
"""

from __future__ import annotations

from collections.abc import Mapping

from hpo import limits
from hpo.defaults import ENV_WITHHELD_URLS
from hpo.settings import BROKER, STORE

__all__ = ["script_environment"]


def script_environment(base: Mapping[str, str], *, keep_credentials: bool,
                       store_url: str | None = None, broker_url: str | None = None
                       ) -> dict[str, str]:
    """The environment of a script, from ``base`` (the agent's own).

    ``store_url`` and ``broker_url``, when given, are the URLs the agent itself uses:
    they replace ``base``'s variables, so a script sees the agent's store even when the
    agent had it from ``--store-file`` rather than the environment. Without
    ``keep_credentials``, a URL with a password is dropped, and so is a ``*_FILE``
    variable; ``$HPO_WITHHELD_URLS`` then names what was dropped, so that a store read
    in the script fails saying so (``hpo.settings``) instead of opening the default
    store.
    """
    env = dict(base)
    env.pop(ENV_WITHHELD_URLS, None)  # the agent's own, if it runs under an agent
    withheld = []
    for setting, own in ((STORE, store_url), (BROKER, broker_url)):
        if own is not None:
            env[setting.env] = own
            env.pop(setting.env_file, None)  # else the script sees both: an error
        if keep_credentials:
            continue
        url = env.get(setting.env)
        if env.get(setting.env_file) or (url and limits.url_password(url)):
            env.pop(setting.env, None)
            env.pop(setting.env_file, None)
            withheld.append(setting.env)
    if withheld:
        env[ENV_WITHHELD_URLS] = ",".join(withheld)
    return env
