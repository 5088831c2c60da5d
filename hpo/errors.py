"""The one error base of hpo and its kinds.

Every error a user can cause or fix derives from :class:`HpoError`; its message is one
line that names the problem and the fix. Command-line tools print it and exit with 2.
"""

from __future__ import annotations


class HpoError(Exception):
    """Base of every error hpo raises on purpose."""


class ConfigError(HpoError):
    """Bad input: a malformed parameter, a missing script, a wrong setting."""


class StoreError(HpoError):
    """The store failed to do what was asked."""


class StoreUnavailable(StoreError):
    """The store's database cannot be reached or opened."""


class StoreRefusedValue(StoreError):
    """The database refuses a value the write carries (too long, out of range, a NUL
    byte): the same write fails on every try, so a writer that retries drops it."""


class SchemaVersionError(StoreError):
    """The database was written by a version of hpo that this one does not know."""


class TaskNotFound(StoreError):
    """No task has the given id (or name)."""


class InvalidTransition(StoreError):
    """A status change that the task's life cycle does not allow."""


class LostOwnership(StoreError):
    """A write by an attempt that no longer owns its task (it was re-queued, claimed
    again or ended meanwhile): refused, and the attempt's agent stops its script."""
