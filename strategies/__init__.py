"""hpo.strategies: the search-strategy contract (``base``) and its implementations.

Built in: ``random`` (:class:`RandomSearch`), ``grid`` (:class:`GridSearch`), ``optuna``
(``optuna_search``), ``bohb`` and ``asha``; the last three load on first use (``resolve``
imports a built-in when it is first named). Importing a strategy module registers it
under its ``name``; anything else is reached by dotted path or file. A strategy of one's
own is checked with ``hpo.testing.strategy_contract``.
"""

from hpo.strategies.base import (
    Decision,
    NoSuggestion,
    Objective,
    SearchStrategy,
    Suggestion,
    register,
    resolve,
)
from hpo.strategies.grid_search import GridSearch
from hpo.strategies.random_search import RandomSearch

__all__ = [
    "Decision",
    "GridSearch",
    "NoSuggestion",
    "Objective",
    "RandomSearch",
    "SearchStrategy",
    "Suggestion",
    "register",
    "resolve",
]
