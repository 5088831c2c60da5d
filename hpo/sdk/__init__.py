"""hpo.sdk: what a training script imports (``Task``, ``Logger``), shaped like ClearML's.

It owns the two ways a script runs: under an agent (``agent_backend``: the spec file and the
report ``channel`` to the agent, standard library only, so importing it costs
milliseconds inside every task) and by hand (``store_backend``: registers the script as a
template task in the store, with ``script_info``). ``argparse_hook`` captures a script's
argparse into ``Args/``; ``checkpoints`` is where a task saves what a promoted trial
resumes from. Nothing here imports SQLAlchemy or Celery until a script run by hand needs
the store.
"""

from hpo.sdk.logger import Logger
from hpo.sdk.task import Task

__all__ = ["Logger", "Task"]
