"""Random search: independent uniform draws from every range, never the same
configuration twice (ClearML's ``RandomSearch``)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hpo.errors import ConfigError
from hpo.space.product import check_space, combination_at, space_fingerprint, space_size
from hpo.space.ranges import canonical
from hpo.strategies.base import NoSuggestion, SearchStrategy, Suggestion, register

# Draws before falling back to a scan for an unseen configuration. A collision is rare
# until a finite space is nearly used up; then the scan finds one in bounded time.
_MAX_DRAWS = 100


@register
@dataclass
class RandomSearch(SearchStrategy):
    name = "random"
    supports_multi_objective = True  # it ignores the objectives altogether

    _rng: random.Random = field(init=False, repr=False)
    _seen: list[str] = field(init=False, repr=False)  # canonical JSON, in order
    _seen_set: set[str] = field(init=False, repr=False)
    _size: int | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.space = check_space(self.space)
        self._rng = random.Random(self.seed)
        self._seen = []
        self._seen_set = set()
        self._size = space_size(self.space)

    def suggest(self) -> Suggestion | NoSuggestion:
        if self._size is not None and len(self._seen) >= self._size:
            return NoSuggestion.DONE
        config = self._draw_unseen()
        if config is None:
            # Only a continuous space that keeps returning seen values gets here (it
            # cannot happen with real ranges): treat it as exhausted rather than spin.
            return NoSuggestion.DONE
        text = canonical(config)
        trial_id = f"t{len(self._seen)}"
        self._seen.append(text)
        self._seen_set.add(text)
        return Suggestion(trial_id=trial_id, parameters=config)

    def _draw_unseen(self) -> dict[str, Any] | None:
        for _ in range(_MAX_DRAWS):
            config: dict[str, Any] = {}
            for param in self.space:
                config.update(param.get_value(self._rng))
            if canonical(config) not in self._seen_set:
                return config
        if self._size is None:
            return None
        # Nearly exhausted: walk the grid from a random point. At most len(seen) + 1
        # steps, since every configuration passed over has been suggested already.
        start = self._rng.randrange(self._size)
        for offset in range(self._size):
            config = combination_at(self.space, (start + offset) % self._size)
            if canonical(config) not in self._seen_set:
                return config
        return None

    def state(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {
            "fingerprint": space_fingerprint(self.space),
            "seen": list(self._seen),
            "rng": [version, list(internal), gauss],
        }

    def restore(self, state: dict[str, Any]) -> None:
        try:
            fingerprint = state["fingerprint"]
            seen = [str(s) for s in state["seen"]]
            version, internal, gauss = state["rng"]
            rng_state = (int(version), tuple(int(x) for x in internal), gauss)
        except (KeyError, TypeError, ValueError):
            raise ConfigError("the saved random-search state is malformed: start a new "
                              "optimization") from None
        if fingerprint != space_fingerprint(self.space):
            raise ConfigError("the saved random search was over a different parameter space: "
                              "resume with the same hyper_parameters or start a new one")
        try:
            self._rng.setstate(rng_state)
        except (TypeError, ValueError):
            raise ConfigError("the saved random-search state is malformed: start a new "
                              "optimization") from None
        self._seen = seen
        self._seen_set = set(seen)
