"""``Logger``: what a training script reports, shaped like ClearML's."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task

if TYPE_CHECKING:
    from typing import Protocol

    class _Reports(Protocol):  # the part of a task's backend that a logger uses
        def report_scalar(self, title: str, series: str, value: float,
                          iteration: int) -> None: ...
        def report_text(self, text: str) -> None: ...
        def flush(self) -> None: ...


class Logger:
    """Reports scalars and text for one task. Get it with ``task.get_logger()``."""

    # The running task's logger, set by ``Task.init`` (so this module needs no ``Task``).
    _current: Logger | None = None

    def __init__(self, backend: _Reports) -> None:
        self._backend = backend

    @classmethod
    def current_logger(cls) -> Logger | None:
        return cls._current

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        """One point of the ``title``/``series`` curve. NaN is kept (and counts as a
        failed objective); the value must be a number."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"report_scalar({title!r}, {series!r}): value must be a number, got "
                f"{type(value).__name__}") from None
        self._backend.report_scalar(str(title), str(series), number, int(iteration))

    def report_single_value(self, name: str, value: float) -> None:
        """A value with no curve, kept as series ``name`` of title ``Summary``."""
        self.report_scalar("Summary", name, value, 0)

    def report_text(self, msg: str, level: int = 20, print_console: bool = True,
                    *args: object, **kwargs: object) -> None:
        """A line in the task's log (and on the console)."""
        self._backend.report_text(str(msg))

    def flush(self) -> None:
        self._backend.flush()
