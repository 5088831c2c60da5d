"""What ``Logger``'s plot calls store: each report as JSON the web view draws with
plotly.js (histograms, scatter plots and confusion matrices become plotly figures; a
table keeps its columns and rows), and images as PNG files.

Standard library only: numpy arrays, pandas DataFrames, plotly and matplotlib figures
and PIL images are recognised by what they offer (``tolist``, ``to_plotly_json``,
``savefig``), so a script that uses none of them imports none of them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
import zlib

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any


def to_json(value: Any, *, nan: Any = None) -> Any:
    """``value`` as plain JSON: arrays become lists, numpy scalars numbers, and NaN or
    an infinity becomes ``nan`` (null by default: plotly.js draws a gap, and a browser's
    JSON.parse refuses NaN)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else nan
    if isinstance(value, dict):
        return {str(k): to_json(v, nan=nan) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, nan=nan) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, pandas objects
    if callable(tolist):
        return to_json(tolist(), nan=nan)
    item = getattr(value, "item", None)
    if callable(item):
        return to_json(item(), nan=nan)
    return str(value)


def rows_of(matrix: Any) -> list[list[Any]]:
    """A 2-D array or a list of rows, as a list of lists of JSON values."""
    rows = to_json(matrix)
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise TypeError("expected a 2-D array or a list of rows")
    return rows


def _layout(series: str, xaxis: str | None, yaxis: str | None,
            extra: dict[str, Any] | None, more: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    # Titles as {"text": ...}: plotly.js 3 draws no title given as a bare string.
    layout: dict[str, Any] = {"title": {"text": series}, **(more or {})}
    if xaxis:
        layout["xaxis"] = {"title": {"text": xaxis}}
    if yaxis:
        layout["yaxis"] = {**layout.get("yaxis", {}), "title": {"text": yaxis}}
    layout.update(to_json(extra or {}))
    return layout


def histogram(series: str, values: Any, labels: Sequence[str] | None,
              xlabels: Sequence[str] | None, xaxis: str | None, yaxis: str | None,
              mode: str | None, extra_layout: dict[str, Any] | None) -> dict[str, Any]:
    """Bars already counted (ClearML computes no histogram either): a 1-D ``values`` is
    one series; in a 2-D one each column is a series, named by ``labels``."""
    data = to_json(values)
    if not isinstance(data, list):
        raise TypeError("report_histogram: values must be a list or an array")
    columns = ([data] if not data or not isinstance(data[0], list)
               else [list(col) for col in zip(*data, strict=False)])
    x = list(xlabels) if xlabels is not None else list(range(len(columns[0]) if columns else 0))
    traces = [{"type": "bar", "x": x, "y": col,
               "name": labels[i] if labels and i < len(labels) else series}
              for i, col in enumerate(columns)]
    return {"data": traces,
            "layout": _layout(series, xaxis, yaxis, extra_layout, {"barmode": mode or "group"})}


def scatter2d(series: str, scatter: Any, xaxis: str | None, yaxis: str | None,
              labels: Sequence[str] | None, mode: str, comment: str | None,
              extra_layout: dict[str, Any] | None) -> dict[str, Any]:
    """(x, y) pairs (a list or an N x 2 array) as one plotly scatter trace."""
    points = rows_of(scatter)
    trace: dict[str, Any] = {"type": "scatter", "mode": mode, "name": series,
                             "x": [p[0] for p in points], "y": [p[1] for p in points]}
    if labels is not None:
        trace["text"] = [str(label) for label in labels]
    layout = _layout(series, xaxis, yaxis, extra_layout)
    if comment:
        layout["annotations"] = [{"text": comment, "showarrow": False, "xref": "paper",
                                  "yref": "paper", "x": 0, "y": 1.1}]
    return {"data": [trace], "layout": layout}


def confusion_matrix(series: str, matrix: Any, xaxis: str | None, yaxis: str | None,
                     xlabels: Sequence[str] | None, ylabels: Sequence[str] | None,
                     yaxis_reversed: bool, comment: str | None,
                     extra_layout: dict[str, Any] | None) -> dict[str, Any]:
    """A heat map; row 0 at the bottom unless ``yaxis_reversed`` (ClearML's rule)."""
    z = rows_of(matrix)
    trace: dict[str, Any] = {"type": "heatmap", "z": z}
    if xlabels is not None:
        trace["x"] = [str(x) for x in xlabels]
    if ylabels is not None:
        trace["y"] = [str(y) for y in ylabels]
    more: dict[str, Any] = {"yaxis": {"autorange": "reversed"}} if yaxis_reversed else {}
    layout = _layout(series, xaxis, yaxis, extra_layout, more)
    if comment:
        layout["annotations"] = [{"text": comment, "showarrow": False, "xref": "paper",
                                  "yref": "paper", "x": 0, "y": 1.1}]
    return {"data": [trace], "layout": layout}


def table(table_plot: Any = None, csv_path: str | None = None) -> dict[str, Any]:
    """``{"columns": [...], "rows": [[...], ...]}``. A DataFrame keeps its index as the
    first column (as ClearML shows it); a list of rows and a CSV file take their first
    row as the header. NaN and infinities become "NaN", "Inf", "-Inf" (ClearML's text)."""
    if csv_path is not None:
        with open(csv_path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
        return {"columns": lines[0] if lines else [], "rows": lines[1:]}
    if hasattr(table_plot, "to_dict") and hasattr(table_plot, "columns"):  # a DataFrame
        index_name = getattr(table_plot.index, "name", None) or ""
        columns = [str(index_name), *(str(c) for c in table_plot.columns)]
        rows = [[_cell(i), *(_cell(v) for v in values)]
                for i, values in zip(table_plot.index, table_plot.itertuples(index=False),
                                     strict=True)]
        return {"columns": columns, "rows": rows}
    rows = [[_cell(v) for v in row] for row in (to_json(table_plot, nan=math.nan) or [])]
    return {"columns": [str(c) for c in rows[0]] if rows else [], "rows": rows[1:]}


def _cell(value: Any) -> Any:
    value = to_json(value, nan=math.nan)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")
    return value


def plotly_figure(series: str, figure: Any) -> dict[str, Any]:
    """A plotly ``Figure`` or its dict, as JSON; its title becomes the series, as in
    ClearML."""
    raw = figure if isinstance(figure, dict) else getattr(figure, "to_plotly_json", None)
    if raw is None:
        raise TypeError("report_plotly: figure must be a plotly Figure or a dict")
    plot = to_json(raw if isinstance(raw, dict) else raw())
    if isinstance(plot.get("layout"), dict):
        plot["layout"]["title"] = {"text": series}
    return plot


def matplotlib_png(figure: Any) -> bytes:
    """A matplotlib Figure (or the pyplot module: its current figure) as PNG bytes."""
    fig = figure.gcf() if hasattr(figure, "gcf") else figure
    if not hasattr(fig, "savefig"):
        raise TypeError("report_matplotlib_figure: figure must be a matplotlib Figure "
                        "or matplotlib.pyplot")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def image_png(image: Any) -> bytes:
    """A PIL image, or an array of pixels (H x W gray, H x W x 3 RGB, H x W x 4 RGBA;
    0-255, or floats in 0-1), as PNG bytes. Arrays need no imaging library."""
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if type(image).__module__.split(".")[0] == "numpy" and getattr(image, "ndim", 0) in (2, 3):
        return _numpy_png(image)
    pixels = to_json(image, nan=0.0)
    if not isinstance(pixels, list) or not pixels or not isinstance(pixels[0], list):
        raise TypeError("report_image: image must be a PIL image or a 2-D or 3-D array")
    flat = [v for row in pixels for px in row for v in (px if isinstance(px, list) else [px])]
    scale = 255.0 if flat and max(flat) <= 1.0 and any(isinstance(v, float) for v in flat) else 1.0
    height, width = len(pixels), len(pixels[0])
    channels = len(pixels[0][0]) if isinstance(pixels[0][0], list) else 1
    color_type = {1: 0, 3: 2, 4: 6}.get(channels)
    if color_type is None:
        raise TypeError(f"report_image: {channels} channels per pixel; use 1, 3 or 4")
    raw = bytearray()
    for row in pixels:
        raw.append(0)  # PNG filter type 0 (none) for each scanline
        for px in row:
            for v in (px if isinstance(px, list) else [px]):
                raw.append(max(0, min(255, round(v * scale))))
    return _png(width, height, color_type, bytes(raw))


def _numpy_png(image: Any) -> bytes:
    """A numpy array as PNG bytes without a Python loop per pixel (an image per epoch of
    a 1000 x 1000 picture must not cost seconds)."""
    import numpy as np  # the array is numpy's: numpy is there

    pixels = np.nan_to_num(np.asarray(image), nan=0.0)
    if pixels.dtype.kind == "f" and pixels.size and pixels.max() <= 1.0:
        pixels = pixels * 255.0
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    color_type = {1: 0, 3: 2, 4: 6}.get(channels)
    if color_type is None:
        raise TypeError(f"report_image: {channels} channels per pixel; use 1, 3 or 4")
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, width * channels)
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), rows]).tobytes()
    return _png(width, height, color_type, raw)


def _png(width: int, height: int, color_type: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def suffix_of(path: str | Path) -> str:
    """``.csv.gz`` for ``a.csv.gz``: the suffixes a content type is read from."""
    name = str(path).rsplit("/", 1)[-1]
    parts = name.split(".")
    return "." + ".".join(parts[-2:]) if len(parts) > 2 and parts[-1] == "gz" else (
        "." + parts[-1] if len(parts) > 1 else "")


def payload_of(kind: str, payload: Any, file: str | None) -> Any:
    """A stored report's JSON, read from its file when it was too large to keep inline
    (images and media keep their file: the payload is what describes it)."""
    if file is not None and kind not in ("image", "media"):
        from hpo.sdk import files

        return json.loads(files.resolve(file).read_text(encoding="utf-8"))
    return payload
