"""``hpo-controller report``: the files of a report in one folder.

- ``summary.csv``, ``summary.json``: the top-k jobs (and, in JSON, the optimization);
- ``<stem>.html`` per figure, loading ``plotly.min.js`` from the same folder (one copy for
  all of them; nothing fetched from a network, so the folder opens offline and from an
  archive); with ``self_contained`` each page embeds its own copy instead (~4.8 MB
  each) and opens alone, e.g. attached to a mail;
- ``<stem>.png`` per figure, PNG_WIDTH x PNG_HEIGHT, drawn by kaleido in one headless
  Chrome/Chromium for all of them; skipped (with the reason) when there is none;
- ``index.html``: the summary table and every plot, linked and shown.
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hpo.defaults import hpo_home
from hpo.errors import ConfigError
from hpo.optimization.ends import describe_ends
from hpo.report import tables
from hpo.report.data import ReportData, load_report
from hpo.store import Store

PNG_WIDTH, PNG_HEIGHT = 1200, 700
# progress(label, steps done, steps in all): called as each step starts, and once at the end.
Progress = Callable[[str, int, int], None]
# Next to the HTML plots, which load it by this relative name.
PLOTLY_JS = "plotly.min.js"
PNG_FIX = ("install Chromium or Chrome (apt-get install chromium; or run `plotly_get_chrome`),"
           " or point BROWSER_PATH at one")


@dataclass
class ReportFiles:
    """What ``write_report`` wrote."""

    optimizer_id: str
    out_dir: Path
    index: Path
    files: list[Path] = field(default_factory=list)  # every file written, index last
    png_skipped: str | None = None  # why no PNG was written (None: they were)
    data: ReportData | None = None

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def default_folder(optimizer_id: str) -> Path:
    """``$HPO_HOME/reports/<the id's first 8 characters>``: with hpo's data, never in the
    current folder (which may be a checkout: the files would show in ``git status``)."""
    return hpo_home() / "reports" / optimizer_id[:8]


def write_report(store: Store, optimizer_id: str, out_dir: str | os.PathLike[str],
                 top_k: int = 10, *, png: bool = True, self_contained: bool = False,
                 progress: Progress | None = None) -> ReportFiles:
    """Write the report of one optimization into ``out_dir`` (created; files in it of
    the same names are replaced). ``self_contained``: each HTML plot embeds plotly.js
    rather than loading the folder's shared ``plotly.min.js``."""
    from hpo.report.figures import FIGURES

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder: give --out a folder (it is "
                          "created if missing)")
    total = 3 + len(FIGURES) + (1 if png else 0)
    step = _Steps(progress, total)
    step("reading the store")
    data = load_report(store, optimizer_id, top_k)
    try:
        return _write_files(data, out, step, png=png, self_contained=self_contained)
    except OSError as exc:  # a file where the folder should be, no permission, disk full
        raise ConfigError(f"cannot write the report into {out}: "
                          f"{exc.strerror or exc}; pick another --out folder") from exc


def _write_files(data: ReportData, out: Path, step: _Steps, *, png: bool,
                 self_contained: bool) -> ReportFiles:
    from hpo.report.figures import FIGURES, build_figure

    out.mkdir(parents=True, exist_ok=True)
    result = ReportFiles(data.summary.id, out, out / "index.html", data=data)
    step("summary table")
    result.files += [write_csv(data, out / "summary.csv"), write_json(data, out / "summary.json")]
    if not self_contained:
        result.files.append(write_plotly_js(out / PLOTLY_JS))
    figures = {}
    for stem, title in FIGURES.items():
        step(f"plot: {title}")
        figures[stem] = build_figure(stem, data)
        result.files.append(write_html(figures[stem], out / f"{stem}.html",
                                       self_contained=self_contained))
    pngs: dict[str, Path] = {}
    if png:
        step("PNG images")
        pngs, result.png_skipped = write_pngs(figures, out)
        result.files += pngs.values()
    else:
        result.png_skipped = "--no-png"
    step("index")
    result.files.append(write_index(data, pngs, result.index))
    step("done")
    return result


class _Steps:
    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, -1

    def __call__(self, label: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(label, min(self.done, self.total), self.total)


# ----- the summary ----------------------------------------------------------------------


def write_csv(data: ReportData, path: Path) -> Path:
    columns = tables.columns(data.summary)
    with _replacing(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in tables.rows(data.summary):
            # Lists and dicts (a ParameterSet value) as JSON, not Python's repr.
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return path


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | dict | bool):
        return json.dumps(value)
    return "" if value is None else value


def write_json(data: ReportData, path: Path) -> Path:
    header = data.summary.to_dict()
    header.pop("jobs", None)
    header.pop("top", None)
    document = {"optimization": header, "objective": data.objective_label,
                "minimize": data.minimize, "columns": tables.columns(data.summary),
                "top": tables.rows(data.summary)}
    with _replacing(path) as f:
        # Standard JSON: summary.to_dict() and tables.rows() turned NaN into None.
        json.dump(document, f, indent=2, allow_nan=False)
        f.write("\n")
    return path


# ----- plots ----------------------------------------------------------------------------


def write_html(fig: Any, path: Path, *, self_contained: bool = False) -> Path:
    """One page: plotly.js inline (``self_contained``) or loaded from PLOTLY_JS beside
    it; no MathJax (its default is a CDN)."""
    tmp = path.with_name(path.name + ".tmp")
    fig.write_html(tmp, include_plotlyjs=True if self_contained else PLOTLY_JS,
                   include_mathjax=False, full_html=True, config={"displaylogo": False})
    tmp.replace(path)
    return path


def write_plotly_js(path: Path) -> Path:
    """The plotly.js of the installed plotly, written each time rather than kept when
    present (plotly's own ``include_plotlyjs="directory"`` keeps it): a folder written
    again after plotly was upgraded must not pair new pages with an old script."""
    from plotly.offline import get_plotlyjs

    with _replacing(path) as f:
        f.write(get_plotlyjs())
    return path


def write_pngs(figures: dict[str, Any], out: Path) -> tuple[dict[str, Path], str | None]:
    """Every figure as a PNG, in one browser; ({}, why) when that cannot be done."""
    import plotly.io as pio

    paths = {stem: out / f"{stem}.png" for stem in figures}
    try:
        pio.write_images(list(figures.values()), list(paths.values()), width=PNG_WIDTH,
                         height=PNG_HEIGHT)
    except Exception as exc:  # no browser, or kaleido failed: the rest of the report stands
        for path in paths.values():
            if path.exists() and path.stat().st_size == 0:
                path.unlink()
        return {}, _png_failure(exc)
    return paths, None


def _png_failure(exc: Exception) -> str:
    """Why no PNG: kaleido's long "install Chrome" text said in a few words (the caller
    adds PNG_FIX), anything else as it came."""
    text = " ".join(str(exc).split())
    if type(exc).__name__ == "ChromeNotFoundError" or (
            "chrome" in text.lower() and "install" in text.lower()):
        return "no Chrome or Chromium found"
    return f"{type(exc).__name__}: {text[:300]}"


# ----- index.html -------------------------------------------------------------------------


def write_index(data: ReportData, pngs: dict[str, Path], path: Path) -> Path:
    from hpo.report.figures import FIGURES

    s = data.summary
    e = html.escape
    best = "-" if s.best_value is None else f"{s.best_value:.6g} (task {s.best_task})"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>hpo report {e(s.id)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(s.project)} / {e(s.name)}</h1>",
        f"<p class=meta>{e(s.id)} &middot; {e(s.status)} &middot; strategy {e(s.strategy)}"
        f" &middot; {s.launched} job(s) launched, ended: {e(describe_ends(s.ends))} &middot; "
        f"best {e(data.objective_label)}: {e(best)}</p>",
        '<p class=meta>Files: <a href="summary.csv">summary.csv</a>, '
        '<a href="summary.json">summary.json</a></p>',
        f"<h2>Best {len(s.top)} job(s)</h2>", _html_table(data),
        "<h2>Plots</h2>", "<ul>",
        *(f'<li><a href="{stem}.html">{e(title)}</a></li>' for stem, title in FIGURES.items()),
        "</ul>",
    ]
    for stem, title in FIGURES.items():
        parts.append(f'<section id="{stem}"><h3><a href="{stem}.html">{e(title)}</a></h3>')
        if stem in pngs:
            parts.append(f'<a href="{stem}.html"><img src="{stem}.png" alt="{e(title)}" '
                         f'width="{PNG_WIDTH}" height="{PNG_HEIGHT}"></a>')
        else:
            parts.append(f'<p class=meta>No image: open <a href="{stem}.html">the '
                         "interactive plot</a>.</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    with _replacing(path) as f:
        f.write("\n".join(parts) + "\n")
    return path


def _html_table(data: ReportData) -> str:
    columns = tables.columns(data.summary)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_html_cell(row.get(c)))}</td>" for c in columns)
        + "</tr>" for row in tables.rows(data.summary))
    if not body:
        body = f'<tr><td colspan="{len(columns)}">no finished job with an objective yet</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_cell(value: Any) -> str:
    from hpo.cli.output import cell

    return cell(value)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;font-size:14px}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f4f4f4}.meta{color:#555}img{max-width:100%;height:auto;"
        "border:1px solid #ddd}")


@contextlib.contextmanager
def _replacing(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """Open ``path`` for writing through a temporary file renamed over it at the end, so
    a reader never sees half a file and an interrupted run leaves the old one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            yield f
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
