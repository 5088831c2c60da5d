"""``Logger``: what a training script reports, shaped like ClearML's: scalars, text, and
the plot calls (tables, histograms, scatter plots, confusion matrices, plotly and
matplotlib figures, images, media). Plots are stored as JSON the web view draws
(``hpo.sdk.reports``); images and media as files under the artifact root
(``hpo.sdk.files``). docs/clearml.md lists what is supported and what is not."""

from __future__ import annotations

import time

from hpo import defaults

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Protocol

    class _Reports(Protocol):  # the part of a task's backend that a logger uses
        task_id: str
        attempt: int

        def report_scalar(self, title: str, series: str, value: float,
                          iteration: int) -> None: ...
        def report_text(self, text: str) -> None: ...
        def log_line(self, text: str) -> None: ...
        def report(self, report: dict[str, Any]) -> None: ...
        def flush(self) -> None: ...

_INFO = 20  # logging.INFO, without importing logging in every task


class _Lazy:
    """A module imported on first use: a script that reports only scalars never loads
    the plot builders (csv, zlib, ...), so ``import hpo`` stays a few milliseconds."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


build = _Lazy("hpo.sdk.reports")
files = _Lazy("hpo.sdk.files")


class Logger:
    """Reports for one task. Get it with ``task.get_logger()`` or
    ``Logger.current_logger()``."""

    # The running task's logger, set by ``Task.init`` (so this module needs no ``Task``).
    _current: Logger | None = None

    def __init__(self, backend: _Reports) -> None:
        self._backend = backend

    @classmethod
    def current_logger(cls) -> Logger | None:
        return cls._current

    # ----- scalars and text -----------------------------------------------------------

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

    def report_text(self, msg: str, level: int = _INFO, print_console: bool = True,
                    *args: Any, **_: Any) -> None:
        """A line in the task's log; printed too unless ``print_console`` is False."""
        if print_console:
            self._backend.report_text(str(msg))
        else:
            self._backend.log_line(str(msg))

    # ----- plots ----------------------------------------------------------------------

    def report_table(self, title: str, series: str, iteration: int | None = None,
                     table_plot: Any = None, csv: str | None = None, url: str | None = None,
                     extra_layout: dict[str, Any] | None = None,
                     extra_data: dict[str, Any] | None = None) -> None:
        """A table: a pandas DataFrame or a list of rows (the first is the header), or a
        CSV file. One of ``table_plot`` and ``csv``."""
        _one_of("report_table", table_plot=table_plot, csv=csv, url=url)
        if url is not None:
            raise NotImplementedError("report_table(url=...): hpo reads no URLs; pass "
                                      "csv= with a local file (docs/clearml.md)")
        self._report("table", title, series, iteration, build.table(table_plot, csv))

    def report_histogram(self, title: str, series: str, values: Sequence[float] | Any,
                         iteration: int | None = None, labels: Sequence[str] | None = None,
                         xlabels: Sequence[str] | None = None, xaxis: str | None = None,
                         yaxis: str | None = None, mode: str | None = None,
                         data_args: dict[str, Any] | None = None,
                         extra_layout: dict[str, Any] | None = None) -> None:
        """Bars of counts already made (one per value; a 2-D array: a series per column)."""
        figure = build.histogram(series, values, labels, xlabels, xaxis, yaxis, mode,
                                 extra_layout)
        for trace in figure["data"]:
            trace.update(build.to_json(data_args or {}))
        self._report("histogram", title, series, iteration, figure)

    def report_vector(self, title: str, series: str, values: Sequence[float] | Any,
                      iteration: int | None = None, labels: Sequence[str] | None = None,
                      xlabels: Sequence[str] | None = None, xaxis: str | None = None,
                      yaxis: str | None = None, mode: str | None = None,
                      extra_layout: dict[str, Any] | None = None) -> None:
        """The same as ``report_histogram`` (ClearML keeps both names)."""
        self.report_histogram(title, series, values, iteration, labels, xlabels, xaxis,
                              yaxis, mode, extra_layout=extra_layout)

    def report_scatter2d(self, title: str, series: str, scatter: Any,
                         iteration: int | None = None, xaxis: str | None = None,
                         yaxis: str | None = None, labels: Sequence[str] | None = None,
                         mode: str = "lines", comment: str | None = None,
                         extra_layout: dict[str, Any] | None = None) -> None:
        """(x, y) points; several series of one title and iteration share a plot."""
        self._report("scatter2d", title, series, iteration, build.scatter2d(
            series, scatter, xaxis, yaxis, labels, mode, comment, extra_layout))

    def report_confusion_matrix(self, title: str, series: str, matrix: Any,
                                iteration: int | None = None, xaxis: str | None = None,
                                yaxis: str | None = None,
                                xlabels: Sequence[str] | None = None,
                                ylabels: Sequence[str] | None = None,
                                yaxis_reversed: bool = False, comment: str | None = None,
                                extra_layout: dict[str, Any] | None = None) -> None:
        """A heat map of a matrix."""
        self._report("confusion_matrix", title, series, iteration, build.confusion_matrix(
            series, matrix, xaxis, yaxis, xlabels, ylabels, yaxis_reversed, comment,
            extra_layout))

    def report_matrix(self, title: str, series: str, matrix: Any,
                      iteration: int | None = None, xaxis: str | None = None,
                      yaxis: str | None = None, xlabels: Sequence[str] | None = None,
                      ylabels: Sequence[str] | None = None, yaxis_reversed: bool = False,
                      extra_layout: dict[str, Any] | None = None) -> None:
        """The same as ``report_confusion_matrix``."""
        self.report_confusion_matrix(title, series, matrix, iteration, xaxis, yaxis,
                                     xlabels, ylabels, yaxis_reversed,
                                     extra_layout=extra_layout)

    def report_plotly(self, title: str, series: str, figure: Any,
                      iteration: int | None = None) -> None:
        """A plotly Figure, or its dict (``{"data": [...], "layout": {...}}``)."""
        self._report("plotly", title, series, iteration, build.plotly_figure(series, figure))

    def report_matplotlib_figure(self, title: str, series: str, figure: Any,
                                 iteration: int | None = None, report_image: bool = False,
                                 report_interactive: bool = True) -> None:
        """A matplotlib Figure (or ``matplotlib.pyplot``), kept as a PNG image: hpo
        does not convert figures to interactive plots (docs/clearml.md)."""
        self._file_report("image", title, series, iteration, build.matplotlib_png(figure),
                          ".png", {"source": "matplotlib"})

    def report_image(self, title: str, series: str, iteration: int | None = None,
                     local_path: str | None = None, image: Any = None, matrix: Any = None,
                     max_image_history: int | None = None, delete_after_upload: bool = False,
                     url: str | None = None) -> None:
        """An image: a file, a PIL image or an array of pixels (``matrix`` is the old
        name of ``image``), or the URL of one (recorded as a link)."""
        _one_of("report_image", local_path=local_path, image=image, matrix=matrix, url=url)
        if url is not None:
            self._report("image", title, series, iteration, {"url": str(url)})
        elif local_path is not None:
            self._copy_report("image", title, series, iteration, local_path,
                              delete_after_upload)
        else:
            self._file_report("image", title, series, iteration,
                              build.image_png(image if image is not None else matrix), ".png")

    def report_media(self, title: str, series: str, iteration: int | None = None,
                     local_path: str | None = None, stream: Any = None,
                     file_extension: str | None = None, max_history: int | None = None,
                     delete_after_upload: bool = False, url: str | None = None) -> None:
        """Audio, video, HTML or any file: a path, a stream (with ``file_extension``),
        or the URL of one (recorded as a link)."""
        _one_of("report_media", local_path=local_path, stream=stream, url=url)
        if url is not None:
            self._report("media", title, series, iteration, {"url": str(url)})
        elif local_path is not None:
            self._copy_report("media", title, series, iteration, local_path,
                              delete_after_upload)
        else:
            if not file_extension:
                raise ValueError("report_media(stream=...) needs file_extension")
            data = stream.read()
            suffix = file_extension if file_extension.startswith(".") else f".{file_extension}"
            self._file_report("media", title, series, iteration,
                              data.encode() if isinstance(data, str) else bytes(data), suffix)

    def flush(self) -> bool:
        self._backend.flush()
        return True

    if not TYPE_CHECKING:  # hidden from mypy: every other name stays an error there
        def __getattr__(self, name: str) -> Any:
            """A ClearML call hpo leaves out says why (hpo.sdk.unsupported)."""
            if name.startswith("_"):
                raise AttributeError(name)
            from hpo.sdk import unsupported

            raise unsupported.refuse("Logger", name)

    # ----- one way to record a report --------------------------------------------------

    def _report(self, kind: str, title: str, series: str, iteration: int | None,
                payload: Any, file: str | None = None) -> None:
        title, series = _metric(title, "title"), _metric(series, "series")
        iteration = int(iteration or 0)
        if payload is not None and file is None:
            import json

            text = json.dumps(payload, allow_nan=False)
            if len(text) > defaults.MAX_INLINE_REPORT_BYTES:
                # A large table or figure: a file beside the artifacts, its path inline.
                file = self._path(kind, title, series, iteration, ".json")
                files.write_bytes(file, text.encode())
                payload = {"inline": False}
        self._backend.report({"kind": kind, "title": title, "series": series,
                              "iteration": iteration, "payload": payload, "file": file,
                              "time": time.time()})

    def _file_report(self, kind: str, title: str, series: str, iteration: int | None,
                     data: bytes, suffix: str, payload: dict[str, Any] | None = None) -> None:
        rel = self._path(kind, title, series, int(iteration or 0), suffix)
        files.write_bytes(rel, data)
        self._report(kind, title, series, iteration, payload or {}, rel)

    def _copy_report(self, kind: str, title: str, series: str, iteration: int | None,
                     local_path: str, delete_after_upload: bool) -> None:
        from pathlib import Path

        source = Path(local_path)
        if not source.is_file():
            raise FileNotFoundError(f"{kind} file not found: {local_path}")
        rel = self._path(kind, title, series, int(iteration or 0),
                         build.suffix_of(source.name))
        files.copy_file(source, rel)
        self._report(kind, title, series, iteration, {"name": source.name}, rel)
        if delete_after_upload:
            source.unlink()

    def _path(self, kind: str, title: str, series: str, iteration: int, suffix: str) -> str:
        name = files.unique_name(f"{title}-{series}-{iteration}", suffix)
        return files.relative(self._backend.task_id, self._backend.attempt, kind, name)


def _one_of(call: str, **given: Any) -> None:
    named = [name for name, value in given.items() if value is not None]
    if len(named) != 1:
        raise ValueError(f"{call}: give exactly one of {', '.join(given)} "
                         f"(given: {', '.join(named) or 'none'})")


def _metric(value: object, what: str) -> str:
    text = str(value)
    if len(text) > defaults.MAX_METRIC_LEN:
        raise ValueError(f"report {what} is {len(text)} characters long: the store holds "
                         f"{defaults.MAX_METRIC_LEN} at most, use a shorter one")
    return text
