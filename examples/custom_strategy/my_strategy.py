"""A user-written search strategy: local search around the best configuration so far.

The first ``n_initial`` configurations are random. After that, each suggestion takes
the best configuration heard so far and draws a new value for ``moves`` of its ranges
(chosen at random), keeping the others: a random walk that always restarts from the
best point, which is often enough to polish a good configuration. A configuration is
never suggested twice.

Select it in hpo.yaml by dotted path (the folder of this file must be importable):

    strategy: my_strategy.LocalSearch
    strategy_kwargs: {seed: 1, n_initial: 4}

    hpo-controller start examples/custom_strategy/hpo.yaml

Everything a strategy needs is in ``hpo.strategies.base``: subclass ``SearchStrategy``
(a dataclass: add your own keyword arguments as fields with defaults), implement
``suggest``, ``state`` and ``restore``, and optionally ``on_result`` / ``on_report``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from hpo.errors import ConfigError
from hpo.strategies.base import NoSuggestion, SearchStrategy, Suggestion

# Draws before concluding that every neighbour (and every random point) was tried.
MAX_DRAWS = 200


@dataclass
class LocalSearch(SearchStrategy):
    # Shown in logs; a strategy in the registry would add @register and be selectable
    # as `strategy: local`. By dotted path no registration is needed.
    name = "local"

    n_initial: int = 5  # random configurations before the local moves start
    moves: int = 1  # ranges re-drawn per step

    # Internal state (not constructor arguments): everything is JSON-friendly so that
    # state() is trivial.
    _rng: random.Random = field(init=False, repr=False)
    _seen: dict[str, dict[str, Any]] = field(init=False, repr=False)  # key -> parameters
    _trials: dict[str, str] = field(init=False, repr=False)  # trial id -> config key
    _best: tuple[float, str] | None = field(init=False, repr=False)  # (score, key)

    def __post_init__(self) -> None:
        if len(self.objectives) != 1:
            raise ConfigError("LocalSearch optimizes one objective")
        if not isinstance(self.n_initial, int) or self.n_initial < 1:
            raise ConfigError(f"n_initial must be a positive integer, not {self.n_initial!r}")
        if not isinstance(self.moves, int) or not 1 <= self.moves <= len(self.space):
            raise ConfigError(f"moves must be between 1 and the number of ranges "
                              f"({len(self.space)}), not {self.moves!r}")
        self._rng = random.Random(self.seed)
        self._seen = {}
        self._trials = {}
        self._best = None

    # ----- the contract ----------------------------------------------------------

    def suggest(self) -> Suggestion | NoSuggestion:
        """Parameters for the next trial, or DONE when no new configuration is found."""
        for attempt in range(MAX_DRAWS):
            # Half the draws near the best; then random points, in case every
            # neighbour of the best was tried already.
            config = self._candidate(local=attempt < MAX_DRAWS // 2)
            key = json.dumps(config, sort_keys=True)
            if key not in self._seen:
                trial_id = f"t{len(self._trials)}"
                self._seen[key] = config
                self._trials[trial_id] = key
                # max_iteration=None: the job runs to max_iteration_per_job.
                return Suggestion(trial_id=trial_id, parameters=config)
        return NoSuggestion.DONE  # a small finite space, used up

    def on_result(self, trial_id: str, values: Any) -> None:
        """A finished trial: ``values`` in the order of ``objectives``, None if it failed."""
        if not values or trial_id not in self._trials or math.isnan(values[0]):
            return
        score = values[0] if self.objectives[0].minimize else -values[0]
        if self._best is None or score < self._best[0]:
            self._best = (float(score), self._trials[trial_id])

    def state(self) -> dict[str, Any]:
        """A JSON snapshot; the controller saves it after every suggestion and result."""
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss], "seen": self._seen,
                "trials": self._trials, "best": list(self._best) if self._best else None}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state()`` (``hpo-controller resume``)."""
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._seen = dict(state["seen"])
        self._trials = dict(state["trials"])
        self._best = (float(state["best"][0]), state["best"][1]) if state["best"] else None

    # ----- helpers ---------------------------------------------------------------

    def _random(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for param in self.space:  # each range draws its own value(s), typed
            config.update(param.get_value(self._rng))
        return config

    def _candidate(self, local: bool) -> dict[str, Any]:
        if not local or self._best is None or len(self._trials) < self.n_initial:
            return self._random()
        config = dict(self._seen[self._best[1]])
        for param in self._rng.sample(list(self.space), self.moves):
            config.update(param.get_value(self._rng))
        return config
