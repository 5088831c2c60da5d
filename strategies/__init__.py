"""hpo.strategies: the search-strategy contract (``base``) and its implementations.

Built in so far: ``random`` (:class:`RandomSearch`) and ``grid`` (:class:`GridSearch`);
Optuna, BOHB and ASHA follow. Importing a strategy module registers it under its
``name``, so ``resolve("random")`` finds it; anything else is reached by dotted path.
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
