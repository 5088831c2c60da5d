"""Reports: ``load_report`` and the figures on a store built by hand (fast), the files
``write_report`` writes, and ``hpo-controller report`` after a real optimization of the
example (PNGs drawn by the system's Chromium)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import re
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs

from hpo.errors import ConfigError
from hpo.lifecycle import Status, TaskType
from hpo.optimization.config import OptimizerConfig
from hpo.report.data import load_report
from hpo.report.figures import FIGURES, build_figures
from hpo.report.files import PLOTLY_JS, PNG_HEIGHT, PNG_WIDTH, write_report
from hpo.space.ranges import (
    DiscreteParameterRange,
    LogUniformParameterRange,
    ParameterSet,
    UniformIntegerParameterRange,
)
from hpo.store import Store, open_store
from hpo.strategies.base import Objective
from tests.conftest import DIGITS_JOBS, missing_service
from tests.test_controller_cli import ctl

# A <script src=...> or <link href=...> that points at a network address.
EXTERNAL = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""",
                      re.IGNORECASE)


# ----- a store built by hand --------------------------------------------------------------


class Clock:
    """The store's clock, moved by hand: timestamps the tests can predict."""

    def __init__(self) -> None:
        self.t = time.time() - 600  # the optimization started ten minutes ago

    def __call__(self) -> float:
        return self.t

    def tick(self, seconds: float = 10.0) -> None:
        self.t += seconds


def job(store: Store, clock: Clock, parent: str, params: dict[str, Any], *,
        losses: list[float], status: Status | None, worker: str = "agent-a") -> str:
    """One child: launched, then (status not None) run by ``worker`` reporting ``losses``
    at iterations 0, 1, ..., then ended with ``status`` (running: left running)."""
    task = store.create_task("p", "job", parent=parent, parameters=params)
    clock.tick()
    if status is None:
        return task.id
    store.enqueue(task.id, "q")
    attempt = store.claim(task.id, worker)
    assert attempt is not None
    clock.tick()
    store.append_scalars(task.id, [("val", "loss", i, v, clock()) for i, v in enumerate(losses)]
                         + [("val", "other", 0, -1.0, clock())], attempt=attempt)
    clock.tick(30)
    if status is not Status.running:
        store.finish(task.id, attempt, status)
    return task.id


CONFIG = OptimizerConfig(
    base_task_id="template",
    hyper_parameters=[
        LogUniformParameterRange("lr", -4, -1),
        DiscreteParameterRange("opt", ["sgd", "adam"]),
        UniformIntegerParameterRange("epochs", 1, 10),
        ParameterSet([{"Args/wd": 0.1, "Args/nesterov": True},
                      {"Args/wd": 0.2, "Args/nesterov": False}]),
    ],
    objectives=[Objective("val", "loss", "min")],
    strategy="random", total_max_jobs=10, compute_time_limit=60.0,
    max_number_of_concurrent_tasks=2,
)


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An optimization of 6 jobs: 2 completed (the second best), one stopped early, one
    failed, one running, one queued."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    clock = Clock()
    monkeypatch.setattr(store, "now", clock)
    opt = store.create_task("p", "<b>opt</b> & co", type=TaskType.optimizer)
    store.create_optimization(opt.id, CONFIG.to_dict())
    store.set_status(opt.id, Status.running)
    ids = [
        job(store, clock, opt.id, {"lr": 1e-3, "opt": "sgd", "epochs": 5, "Args/wd": 0.1,
                                   "Args/nesterov": True},
            losses=[1.0, 0.5, 0.3], status=Status.completed),
        job(store, clock, opt.id, {"lr": 1e-2, "opt": "adam", "epochs": 3, "Args/wd": 0.2,
                                   "Args/nesterov": False},
            losses=[0.9, 0.2, 0.1], status=Status.completed, worker="agent-b"),
        job(store, clock, opt.id, {"lr": 1e-4, "opt": "sgd", "epochs": 9, "Args/wd": 0.1,
                                   "Args/nesterov": True},
            losses=[2.0], status=Status.stopped),
        job(store, clock, opt.id, {"lr": 5e-2, "opt": "adam", "epochs": 2, "Args/wd": 0.2,
                                   "Args/nesterov": False},
            losses=[0.05], status=Status.failed, worker="agent-b"),
        job(store, clock, opt.id, {"lr": 2e-3, "opt": "adam", "epochs": 4, "Args/wd": 0.1,
                                   "Args/nesterov": True},
            losses=[0.7], status=Status.running),
        job(store, clock, opt.id, {"lr": 3e-3, "opt": "sgd", "epochs": 6, "Args/wd": 0.2,
                                   "Args/nesterov": False},
            losses=[], status=None),
    ]
    yield {"store": store, "id": opt.id, "jobs": ids}
    store.close()


# ----- load_report --------------------------------------------------------------------------


def test_axes_follow_the_parameter_types(built):
    data = load_report(built["store"], built["id"])
    kinds = {a.name: (a.kind, a.categories) for a in data.axes}
    assert kinds == {
        "General/lr": ("log", []),
        "General/opt": ("categorical", ["sgd", "adam"]),
        "General/epochs": ("linear", []),
        "Args/wd": ("linear", []),  # a ParameterSet member with numbers only
        "Args/nesterov": ("categorical", ["True", "False"]),
    }
    assert [a.name for a in data.axes] == data.summary.parameters  # config order
    assert data.objective_label == "val/loss (min)" and data.minimize


def test_jobs_in_launch_order_and_curves_read_in_one_query(built, monkeypatch):
    store = built["store"]
    calls: list[Any] = []
    read = store.children_series
    monkeypatch.setattr(store, "children_series",
                        lambda *a, **k: calls.append(a) or read(*a, **k))
    data = load_report(store, built["id"][:8])
    assert calls == [(built["id"], "val", "loss")]  # one query, whatever the job count
    assert [r.task_id for r in data.launched] == built["jobs"]
    curves = {c.task_id: c for c in data.curves}
    first, second, *_, queued = built["jobs"]
    assert queued not in curves  # nothing reported
    assert curves[first].iterations == [0, 1, 2] and curves[first].values == [1.0, 0.5, 0.3]
    assert [c.stopped_early for c in data.curves] == [False, False, True, True, False]
    assert data.summary.best_task == second and data.summary.best_value == 0.1
    # Only the objective's series: "val/other" is left out
    assert all(-1.0 not in c.values for c in data.curves)


def test_timeline_is_monotonic_and_counts_jobs_workers_and_compute(built):
    t = load_report(built["store"], built["id"]).timeline
    assert t.seconds[0] == 0 and t.seconds == sorted(t.seconds)
    assert len(set(t.seconds)) == len(t.seconds)
    n = len(t.seconds)
    assert all(len(s) == n for s in (t.jobs_launched, t.compute_min, t.wall_min, t.running,
                                     t.workers))
    for series in (t.jobs_launched, t.compute_min, t.wall_min, t.workers):
        assert all(a <= b for a, b in itertools.pairwise(series)), series
    assert t.jobs_launched[-1] == 6 and t.workers[-1] == 2 and t.running[-1] == 1
    assert max(t.running) == 1  # the jobs above ran one after the other
    # 4 ended jobs ran 40 s each, and the running one 40 s until ~now at least
    assert t.compute_min[-1] >= 200 / 60 - 1e-6
    assert (t.total_max_jobs, t.compute_time_limit, t.optimization_time_limit,
            t.max_concurrent) == (10, 60.0, None, 2)
    assert t.wall_min[-1] == pytest.approx(t.seconds[-1] / 60)


# ----- figures ------------------------------------------------------------------------------


def test_parallel_coordinates_draw_log_and_categorical_axes(built):
    figs = build_figures(load_report(built["store"], built["id"]))
    assert list(figs) == list(FIGURES)
    [parcoords] = figs["parallel_coordinates"].data
    dims = {d.label: d for d in parcoords.dimensions}
    assert len(parcoords.dimensions) == 5 + 1  # every tuned parameter, then the objective
    assert parcoords.dimensions[-1].label == "val/loss (min)"
    # Finished jobs with an objective: the 2 completed and the stopped one
    assert list(parcoords.dimensions[-1].values) == [0.3, 0.1, 2.0]
    assert list(parcoords.line.color) == [0.3, 0.1, 2.0] and parcoords.line.showscale
    log = dims["lr (log)"]
    assert list(log.values) == pytest.approx([-3, -2, -4])
    assert dict(zip(log.tickvals, log.ticktext, strict=True)) == {
        -4: "0.0001", -3: "0.001", -2: "0.01"}
    assert list(dims["opt"].ticktext) == ["sgd", "adam"]
    assert list(dims["opt"].values) == [0, 1, 0]
    assert list(dims["Args/nesterov"].ticktext) == ["True", "False"]
    assert list(dims["epochs"].values) == [5, 3, 9]


def test_objective_learning_curves_budget_and_workers(built):
    figs = build_figures(load_report(built["store"], built["id"]))
    traces = {t.name: t for t in figs["objective"].data}
    assert list(traces["finished job"].x) == [1, 2, 3]
    assert list(traces["best so far"].y) == [0.3, 0.1, 0.1]
    assert traces["best so far"].line.shape == "hv"
    failed = next(t for name, t in traces.items() if name.startswith("failed"))
    assert list(failed.x) == [4] and failed.marker.symbol == "x"
    assert list(traces["running (latest value)"].x) == [5]

    # One trace per kind of curve, the curves of a kind joined with gaps (None).
    curves = [c for c in figs["learning_curves"].data if c.mode == "lines"]
    assert [c.name for c in curves] == ["ended early", "job", "best job"]  # best on top
    by_name = {c.name: c for c in curves}
    assert by_name["best job"].line.width == 4
    assert list(by_name["best job"].y) == [0.9, 0.2, 0.1, None]
    assert list(by_name["ended early"].y).count(None) == 2  # two jobs ended early
    assert list(by_name["job"].y).count(None) == 2
    assert by_name["ended early"].line.dash == "dot"

    budget = figs["budget"]
    assert len(budget.data) == 3
    limits = sorted(s.y0 for s in budget.layout.shapes)
    assert limits == [10, 60.0]  # total_max_jobs and compute_time_limit; no wall limit
    workers = {t.name: t for t in figs["workers"].data}
    assert set(workers) == {"jobs running", "agents seen"}
    assert workers["agents seen"].y[-1] == 2
    for fig in figs.values():  # self-contained: serializable for the web page
        assert json.loads(fig.to_json())["layout"]["title"]["text"]


def test_a_job_that_reported_nan_has_no_result_as_in_the_controller(built):
    # Given the first job reported NaN once, then a finite (and best) value
    store = built["store"]
    first = built["jobs"][0]
    # (unfenced: the job has ended, so its own attempt's writes would be refused)
    store.append_scalars(first, [("val", "loss", 3, math.nan, 0.0),
                                 ("val", "loss", 4, 0.01, 0.0)])
    data = load_report(store, built["id"])
    # Then it has no result (it completed without objective), and the best is still the
    # second job
    row = next(r for r in data.launched if r.task_id == first)
    assert row.objective is None and row.end == "completed without objective"
    assert data.summary.best_task == built["jobs"][1] and data.summary.failed == 1


def test_several_objectives_each_get_a_column_and_an_axis(built, tmp_path):
    # Given the optimization also maximizes val/other (every job that ran reported -1.0)
    store = built["store"]
    two = dataclasses.replace(CONFIG, objectives=[Objective("val", "loss", "min"),
                                                  Objective("val", "other", "max")])
    store.update_optimization_config(built["id"], two.to_dict())
    data = load_report(store, built["id"])
    # Then the ranking follows the first, and the second is a column after it
    assert [r.objective for r in data.summary.top] == [0.1, 0.3, 2.0]
    files = write_report(store, built["id"], tmp_path / "out", png=False)
    table = read_csv(files.out_dir / "summary.csv")
    assert list(table[0])[:5] == ["rank", "task_id", "objective", "iteration", "val/other"]
    assert [row["val/other"] for row in table] == ["-1.0"] * 3
    # and an axis of the parallel coordinates, after the ranked objective
    [parcoords] = build_figures(data)["parallel_coordinates"].data
    labels = [d.label for d in parcoords.dimensions]
    assert labels[-2:] == ["val/loss (min)", "val/other"]
    assert list(parcoords.dimensions[-1]["values"]) == [-1.0] * 3


def test_an_output_that_cannot_be_a_folder_is_a_one_line_error(built, tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        write_report(built["store"], built["id"], a_file, png=False)
    with pytest.raises(ConfigError, match=r"cannot write the report into .*pick another"):
        write_report(built["store"], built["id"], a_file / "below", png=False)


def test_an_optimization_without_jobs_gives_empty_figures_with_a_note(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    opt = store.create_task("p", "opt", type=TaskType.optimizer)
    store.create_optimization(opt.id, CONFIG.to_dict())
    data = load_report(store, opt.id)
    assert data.launched == [] and data.curves == []
    assert data.timeline.jobs_launched[-1] == 0
    for stem, fig in build_figures(data).items():
        assert not fig.data, stem
        [note] = fig.layout.annotations
        assert "yet" in note.text, stem


def test_a_plot_that_fails_is_an_empty_figure_saying_why(built, monkeypatch):
    from hpo.report import figures

    def broken(data: Any) -> Any:
        raise ValueError("odd data")

    monkeypatch.setitem(figures._BUILDERS, "budget", broken)
    figs = build_figures(load_report(built["store"], built["id"]))
    assert "odd data" in figs["budget"].layout.annotations[0].text
    assert figs["workers"].data  # the others are drawn


# ----- files ------------------------------------------------------------------------------


def check_report_folder(out: Path, params: list[str], rows: int, png: bool,
                        self_contained: bool = False) -> None:
    """The files of a report: summary, HTML plots (sharing the folder's plotly.min.js,
    or each embedding it), PNGs, index."""
    for name in ("index.html", "summary.csv", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob("*.tmp"))
    table = read_csv(out / "summary.csv")
    assert len(table) == rows
    assert list(table[0]) == ["rank", "task_id", "objective", "iteration", *params,
                              "status", "duration_s", "agent"]
    document = json.loads((out / "summary.json").read_text())
    assert [r["task_id"] for r in document["top"]] == [r["task_id"] for r in table]
    assert document["optimization"]["id"] and "jobs" not in document["optimization"]
    index = (out / "index.html").read_text()
    if not self_contained:
        assert (out / PLOTLY_JS).read_text() == get_plotlyjs()
    for stem in FIGURES:
        page = (out / f"{stem}.html").read_text()
        assert "Plotly.newPlot" in page
        assert not EXTERNAL.search(page), (stem, EXTERNAL.search(page))
        # plotly.js mentions URLs in its code (map tiles, the topojson of geo plots) that
        # these plots never load; what a browser fetches by itself is a tag's src/href.
        sources = re.findall(r"<script[^>]*\bsrc\s*=\s*\"([^\"]*)\"", page)
        if self_contained:
            assert len(page) > 1_000_000 and not sources  # plotly.js inline
        else:
            assert len(page) < 100_000 and sources == [PLOTLY_JS]  # the folder's copy
        assert f'href="{stem}.html"' in index
        if png:
            assert f'src="{stem}.png"' in index
            assert png_size(out / f"{stem}.png") == (PNG_WIDTH, PNG_HEIGHT)
        else:
            assert not (out / f"{stem}.png").exists()
    assert not EXTERNAL.search(index)
    for row in table:
        assert row["task_id"] in index


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk (the first one, right after the signature)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_write_report_without_pngs(built, tmp_path):
    steps: list[tuple[str, int, int]] = []
    out = tmp_path / "report"
    result = write_report(built["store"], built["id"], out, top_k=2, png=False,
                          progress=lambda *step: steps.append(step))
    check_report_folder(out, ["lr", "opt", "epochs", "Args/wd", "Args/nesterov"], rows=2,
                        png=False)
    assert result.png_skipped == "--no-png" and result.index == out / "index.html"
    assert {p.name for p in result.files} == {
        "summary.csv", "summary.json", "index.html", PLOTLY_JS,
        *(f"{s}.html" for s in FIGURES)}
    assert result.total_bytes == sum(p.stat().st_size for p in out.iterdir())
    total = steps[0][2]
    assert [s[1] for s in steps] == list(range(total + 1)) and steps[-1][0] == "done"
    index = (out / "index.html").read_text()
    assert "&lt;b&gt;opt&lt;/b&gt; &amp; co" in index and "<b>" not in index
    rows = read_csv(out / "summary.csv")
    assert [r["task_id"] for r in rows] == built["jobs"][1::-1]  # best first
    assert rows[0]["lr"] == "0.01" and rows[0]["Args/nesterov"] == "false"
    assert rows[0]["agent"] == "agent-b" and rows[0]["iteration"] == "2"
    # Written again over the same folder: replaced (an old plotly.js too), no error
    (out / PLOTLY_JS).write_text("an older plotly.js")
    write_report(built["store"], built["id"], out, top_k=2, png=False)
    assert (out / PLOTLY_JS).read_text() == get_plotlyjs()


def test_a_self_contained_report_embeds_plotly_in_each_page(built, tmp_path):
    out = tmp_path / "report"
    result = write_report(built["store"], built["id"], out, top_k=2, png=False,
                          self_contained=True)
    check_report_folder(out, ["lr", "opt", "epochs", "Args/wd", "Args/nesterov"], rows=2,
                        png=False, self_contained=True)
    assert not (out / PLOTLY_JS).exists() and PLOTLY_JS not in {p.name for p in result.files}


def test_pngs_are_skipped_with_a_reason_when_no_browser_draws_them(built, tmp_path,
                                                                  monkeypatch):
    import plotly.io as pio

    def no_chrome(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Kaleido requires Chrome to be installed")

    monkeypatch.setattr(pio, "write_images", no_chrome)
    result = write_report(built["store"], built["id"], tmp_path / "r")
    assert result.png_skipped == "no Chrome or Chromium found"
    check_report_folder(tmp_path / "r", ["lr", "opt", "epochs", "Args/wd", "Args/nesterov"],
                        rows=3, png=False)


def need_chromium() -> None:
    if not any(shutil.which(name) for name in ("chromium", "chromium-browser",
                                               "google-chrome", "chrome")):
        missing_service("Chromium (apt-get install chromium)")


@pytest.mark.browser
def test_write_report_draws_pngs_of_the_fixed_size(built, tmp_path):
    need_chromium()
    result = write_report(built["store"], built["id"], tmp_path / "r")
    assert result.png_skipped is None
    check_report_folder(tmp_path / "r", ["lr", "opt", "epochs", "Args/wd", "Args/nesterov"],
                        rows=3, png=True)


# ----- `hpo-controller report` after a real optimization -----------------------------------


@pytest.fixture(scope="module")
def digits_done(digits_optimization: dict[str, Any],
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The digits example optimized end to end: DIGITS_JOBS jobs on 2 local agents
    (conftest's, run once per session); ``tmp`` a folder for this module's reports."""
    result = digits_optimization["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert DIGITS_JOBS > 5  # so that --top 5 below leaves jobs out
    return {"env": digits_optimization["env"], "id": digits_optimization["id"],
            "tmp": tmp_path_factory.mktemp("digits-report")}


DIGITS_PARAMS = ["alpha", "eta0", "learning_rate", "penalty", "epochs", "batch_size"]


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_report_after_an_end_to_end_optimization(digits_done):
    need_chromium()
    out = digits_done["tmp"] / "report"
    result = ctl(digits_done["env"], "report", digits_done["id"], "--out", str(out),
                 "--top", "5", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    check_report_folder(out, DIGITS_PARAMS, rows=5, png=True)
    # Piped: plain lines, no terminal codes; the table, the files, the index last
    lines = result.stdout.splitlines()
    assert all("\x1b[" not in line for line in lines)
    assert "best 5 job(s)" in result.stdout
    assert any(line.startswith("wrote 5 png file(s)") for line in lines), result.stdout
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    assert lines[-2] == (f"{len(list(out.iterdir()))} files, {size:.1f} MB in all, in "
                         f"{out.resolve()}")
    assert lines[-1] == f"index: {(out / 'index.html').resolve()}"
    assert result.stderr == ""
    rows = read_csv(out / "summary.csv")
    assert all(r["status"] == "completed" and float(r["objective"]) > 0.5 for r in rows)
    curves = json.loads((out / "summary.json").read_text())
    assert curves["optimization"]["launched"] == DIGITS_JOBS


@pytest.mark.timeout(300)  # it may be the first to run the optimization (-m "not browser")
def test_report_of_the_newest_without_a_browser_skips_pngs_in_one_line(digits_done):
    env = {**digits_done["env"], "BROWSER_PATH": "/nonexistent/chrome"}
    result = ctl(env, "report", "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads(result.stdout)
    assert written["id"] == digits_done["id"] and written["png_skipped"]
    # No --out: with hpo's data, not in the current folder (a checkout, perhaps)
    out = Path(env["HPO_HOME"]) / "reports" / digits_done["id"][:8]
    assert Path(written["out"]) == out
    assert written["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    [warning] = result.stderr.splitlines()
    assert warning.startswith("hpo-controller: warning: PNG images skipped: no Chrome or "
                              "Chromium found: install Chromium")
    assert "plotly_get_chrome" in warning
    check_report_folder(out, DIGITS_PARAMS, rows=DIGITS_JOBS, png=False)


def test_report_errors_are_one_line_exit_2(hpo_env, tmp_path):
    for argv in (["report"], ["report", "feedface"]):
        result = ctl(hpo_env, *argv, "--out", str(tmp_path / "x"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("hpo-controller: error: ")
    assert not (tmp_path / "x").exists()
    help_text = ctl(hpo_env, "report", "--help").stdout
    for option in ("--out", "--top", "--no-png", "--json", "--self-contained", "index.html",
                   "plotly.min.js"):
        assert option in help_text

