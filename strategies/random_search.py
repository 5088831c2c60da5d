"""Random search: independent uniform draws from every range, never the same
configuration twice (ClearML's ``RandomSearch``)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from hpo.errors import ConfigError
from hpo.space.product import check_space, combination_at, space_fingerprint, space_size
from hpo.space.ranges import canonical
from hpo.strategies.base import (
    NoSuggestion,
    SearchStrategy,
    Suggestion,
    check_seed,
    register,
)

# Draws before falling back to a scan for an unseen configuration. A collision is rare
# until a finite space is nearly used up; then the scan finds one in bounded time.
_MAX_DRAWS = 100


@register
@dataclass
class RandomSearch(SearchStrategy):
    name = "random"
    supports_multi_objective = True  # it ignores the objectives altogether

    _start: int | str = field(init=False, repr=False)  # the seed every draw follows from
    _rng: random.Random = field(init=False, repr=False)
    _seen: list[str] = field(init=False, repr=False)  # canonical JSON, in order
    _seen_set: set[str] = field(init=False, repr=False)
    _size: int | None = field(init=False, repr=False)
    # A hash chain over the configurations suggested, in order: restore compares the one
    # it redraws with the one saved, since the space's fingerprint does not cover the code
    # that draws (get_value, _MAX_DRAWS, canonical, the grid walk).
    _digest: str = field(init=False, repr=False)
    # Restored from a state that listed the configurations seen: its draws did not follow
    # from ``_start``, so it keeps saving that list (a seed and count would redraw others).
    _saves_seen: bool = field(init=False, repr=False)
    _fingerprint: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.space = check_space(self.space)
        check_seed("random search", self.seed, text=True)
        # Without a seed, one of its own (as random.Random would draw): the state names it.
        self._start = (self.seed if self.seed is not None
                       else random.SystemRandom().randrange(2 ** 63))
        self._rng = random.Random(self._start)
        self._seen = []
        self._seen_set = set()
        self._size = space_size(self.space)
        self._saves_seen = False
        self._digest = ""
        # Once: the controller saves the state at every launch.
        self._fingerprint = space_fingerprint(self.space)

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
        self._digest = _chain(self._digest, text)
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
        """The seed and how many configurations were suggested: a few numbers however
        many there were, so that the controller's save costs the same at trial 10 and
        trial 10,000 (the list of the configurations seen grew with each). ``restore``
        draws them again from the seed. A run restored from a state that listed the
        configurations seen saves that list still (``_saves_seen``)."""
        if self._saves_seen:
            return self._seen_state()
        return {"fingerprint": self._fingerprint, "start": self._start,
                "suggested": len(self._seen), "digest": self._digest}

    def _seen_state(self) -> dict[str, Any]:
        """The earlier format: every configuration seen, and the generator's state."""
        version, internal, gauss = self._rng.getstate()
        return {"fingerprint": self._fingerprint, "seen": list(self._seen),
                "rng": [version, list(internal), gauss]}

    def restore(self, state: dict[str, Any]) -> None:
        if "seen" in state:  # saved by an earlier version: the configurations themselves
            self._restore_seen(state)
            return
        try:
            fingerprint = state["fingerprint"]
            start = state["start"]
            suggested = int(state["suggested"])
            digest = state["digest"]
            if not isinstance(start, int | str) or isinstance(start, bool) or suggested < 0:
                raise TypeError(start)
        except (KeyError, TypeError, ValueError):
            raise _malformed() from None
        self._check_space(fingerprint)
        self._start, self._rng = start, random.Random(start)
        self._seen, self._seen_set, self._saves_seen, self._digest = [], set(), False, ""
        # The same draws from the same seed, in the same order (the code that draws is
        # deterministic; the fingerprint says the space is the same, the digest that the
        # drawing code is).
        for _ in range(suggested):
            if not isinstance(self.suggest(), Suggestion):
                raise _redrawn_otherwise()
        if digest != self._digest:
            raise _redrawn_otherwise()

    def _restore_seen(self, state: dict[str, Any]) -> None:
        """An earlier version's state: the configurations seen and the generator's state."""
        try:
            fingerprint = state["fingerprint"]
            seen = [str(s) for s in state["seen"]]
            version, internal, gauss = state["rng"]
            rng_state = (int(version), tuple(int(x) for x in internal), gauss)
        except (KeyError, TypeError, ValueError):
            raise _malformed() from None
        self._check_space(fingerprint)
        try:
            self._rng.setstate(rng_state)
        except (TypeError, ValueError):
            raise _malformed() from None
        self._seen = seen
        self._seen_set = set(seen)
        self._saves_seen = True  # its state() is the list again: no digest is saved

    def _check_space(self, fingerprint: object) -> None:
        if fingerprint != self._fingerprint:
            raise ConfigError("the saved random search was over a different parameter space: "
                              "resume with the same hyper_parameters or start a new one")


def _chain(digest: str, text: str) -> str:
    """The digest of the configurations suggested, one more (canonical JSON) added."""
    return hashlib.sha256(f"{digest}\n{text}".encode()).hexdigest()


def _redrawn_otherwise() -> ConfigError:
    return ConfigError("the saved random search cannot be resumed: this hpo version draws "
                       "other configurations from its seed than the version that saved it; "
                       "resume it with that version, or start a new optimization")


def _malformed() -> ConfigError:
    return ConfigError("the saved random-search state is malformed: start a new optimization")
