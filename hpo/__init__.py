"""hpo: self-hosted, distributed hyperparameter optimization.

Training scripts use ``Task`` and ``Logger``; importing this package costs only the
standard library, because it runs inside every task an agent starts.
"""

from hpo.errors import HpoError
from hpo.logger import Logger
from hpo.task import Task

__all__ = ["HpoError", "Logger", "Task"]
__version__ = "0.1.0"
