"""Python objects as pickle in base64 text, for the JSON the store keeps: an optimizer's
strategy arguments that are not JSON (an Optuna sampler instance) and a strategy's
saved state (Optuna's sampler with its random state). Standard library only.

Only hpo's own store is ever read back this way: it is as trusted as the scripts it
runs, and nothing from elsewhere is unpickled.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any


def to_text(value: Any) -> str:
    """``value`` pickled, as ASCII. Raises what pickle raises for an object that cannot
    be pickled (a lambda, a lock): the caller decides what that means."""
    return base64.b64encode(pickle.dumps(value)).decode("ascii")


def from_text(text: str) -> Any:
    """The object ``to_text`` made. Raises on text that is not one (a broken state)."""
    return pickle.loads(base64.b64decode(text))  # our own store only (see above)
