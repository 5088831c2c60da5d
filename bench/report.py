"""Report and web-view benchmark: how long a report and the live page take as an
optimization grows, side by side with Optuna's own plots of the same trials.

For each size N (``--jobs``, 100, 1000 and 3000 by default) the bench builds one finished
optimization of N jobs in a real store (a SQLite file in a temporary folder; with
``--pg-admin-url`` also in a fresh PostgreSQL database, dropped at the end) through the
Store API: every job is created, enqueued, claimed by one of 8 agents and finished, with
6 tuned parameters (log-uniform, uniform, integer, categorical, numeric discrete, like
``examples/digits/hpo.yaml``) and 10-20 objective reports (a learning curve), at
timestamps of a run with 8 jobs at a time. The same trials go into Optuna studies: in
memory (``add_trials`` of ``create_trial`` with distributions and intermediate values),
and copied in bulk into a SQLite RDB storage (and the PostgreSQL database), checked by
reading it back through Optuna.

Timed, each up to ``--repeats`` times after a warm-up call (median and min printed):

* reading: ``load_report`` vs ``optuna.load_study`` + ``study.trials`` from the RDB file
  (a fresh study object each time, so Optuna's trial cache starts empty as a new
  process' would);
* drawing from data in memory, each pair alone: ``parallel_coordinates`` vs
  ``plot_parallel_coordinate``, ``objective_per_job`` vs ``plot_optimization_history``,
  ``learning_curves`` vs ``plot_intermediate_values`` (on the in-memory study); and
  ``build_figures`` (all five, no peer);
* a report from the database: ``load_report`` + ``build_figures`` vs ``load_study`` +
  the three plots;
* the live view: ``hpo ui --port 0`` in a subprocess, GET ``/api/optimizations/{id}``
  (the full answer: report + five figures as JSON) and the same GET with If-None-Match
  of its ETag (the 304 path). Peer of the full GET: Optuna load_study + three plots +
  ``to_json`` in process (no HTTP; Optuna has no live view of its own in the package);
* the report command: ``write_report(png=False)`` vs load_study + three plots written
  as self-contained HTML the same way (plotly.js inline); with PNGs once, at the largest
  N, when a Chromium is present.

The peer's database rows are phases of the same calls (``optuna_phases``): one
load_study + three plots costs 5-6 s at 3,000 trials, so timing each row apart would
triple the run.

Ratio = hpo median / peer median: above 1 hpo is slower. The peer draws three plots,
hpo five (plus tables), so the whole-report rows are not like for like; the per-plot rows
are. Peak RSS of this process and of the ``hpo ui`` server is printed too.

Run it: ``python bench/report.py`` (about 3 minutes on 2 cores), ``--quick`` for a smoke
run (N = 100, 2 repeats), ``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratch_db import postgres_database  # bench/ is on sys.path: run as a script

HERE = Path(__file__).resolve()
SLOTS = 8  # jobs running at a time in the simulated run (and agents)
TITLE, SERIES = "validation", "accuracy"
LEARNING_RATES = ["optimal", "constant", "invscaling", "adaptive"]
PENALTIES = ["l2", "l1", "elasticnet"]
BATCH_SIZES = [64, 128, 256]


class BenchError(Exception):
    """A step of the benchmark failed or ran past its deadline."""


# ----- the trials ---------------------------------------------------------------------


@dataclass
class Trial:
    """One job of the simulated optimization, in the form both sides are filled from."""

    params: dict[str, Any]  # short names: alpha, eta0, l1_ratio, epochs, ...
    curve: list[float]  # accuracy at iterations 1, 2, ...
    status: str  # completed / stopped / failed
    worker: str
    launched: float
    started: float
    ended: float


def make_trials(n: int, seed: int, t0: float) -> list[Trial]:
    """N jobs of a random search, 8 at a time: each slot launches its next job when the
    last one ends, so launch/start/end times and workers look like a real run."""
    rng = random.Random(seed)
    free_at = [t0 + 0.5 * i for i in range(SLOTS)]
    trials = []
    for _ in range(n):
        slot = min(range(SLOTS), key=free_at.__getitem__)
        params = {
            "alpha": 10 ** rng.uniform(-6, -1),
            "eta0": 10 ** rng.uniform(-4, -1),
            "l1_ratio": rng.uniform(0.0, 1.0),
            "epochs": rng.choice([5, 10, 15]),
            "learning_rate": rng.choice(LEARNING_RATES),
            "batch_size": rng.choice(BATCH_SIZES),
        }
        # A saturating curve whose ceiling depends (weakly) on the parameters.
        ceiling = 0.97 - 0.04 * abs(math.log10(params["alpha"]) + 4) / 3 - rng.uniform(0, 0.1)
        rate = rng.uniform(0.15, 0.5)
        roll = rng.random()
        status = "completed" if roll < 0.80 else "stopped" if roll < 0.95 else "failed"
        length = 20 if status == "completed" else rng.randint(10, 19)
        curve = [ceiling - (ceiling - 0.1) * math.exp(-rate * k) + rng.gauss(0, 0.005)
                 for k in range(1, length + 1)]
        launched = free_at[slot]
        started = launched + rng.uniform(0.5, 3.0)
        ended = started + length * rng.uniform(3.0, 15.0)
        free_at[slot] = ended + rng.uniform(0.1, 1.0)
        trials.append(Trial(params, curve, status, f"agent-{slot + 1}", launched, started,
                            ended))
    return trials


# ----- hpo's store ------------------------------------------------------------------------


def hpo_config() -> dict[str, Any]:
    from hpo.optimization.config import OptimizerConfig
    from hpo.space.ranges import (
        DiscreteParameterRange,
        LogUniformParameterRange,
        UniformIntegerParameterRange,
        UniformParameterRange,
    )
    from hpo.strategies.base import Objective

    return OptimizerConfig(
        base_task_id="template",
        hyper_parameters=[
            LogUniformParameterRange("alpha", -6, -1),
            LogUniformParameterRange("eta0", -4, -1),
            UniformParameterRange("l1_ratio", 0.0, 1.0),
            UniformIntegerParameterRange("epochs", 5, 15, step_size=5),
            DiscreteParameterRange("learning_rate", LEARNING_RATES),
            DiscreteParameterRange("batch_size", BATCH_SIZES),
        ],
        objectives=[Objective(TITLE, SERIES, "max")],
        strategy="random", max_number_of_concurrent_tasks=SLOTS, max_iteration_per_job=20,
    ).to_dict()


def fill_hpo(url: str, trials: list[Trial], t0: float) -> str:
    """One finished optimization holding ``trials``, written through the Store API the
    way the controller and the agents write it (create, enqueue, claim, report, finish),
    with the store's clock set to each event's time. Returns the optimizer's id."""
    from hpo.lifecycle import Status, TaskType
    from hpo.store import open_store

    store = open_store(url)
    clock = [t0]
    # The store reads its clock through self.now(): an attribute on the instance wins.
    store.now = lambda: clock[0]  # type: ignore[method-assign]
    try:
        opt = store.create_task("bench", "report bench", type=TaskType.optimizer)
        store.create_optimization(opt.id, hpo_config())
        store.set_status(opt.id, Status.running)
        # Events in time order would interleave jobs; the store does not care about the
        # order of writes, only the timestamps, so each job is written start to end.
        for n, trial in enumerate(trials, 1):
            clock[0] = trial.launched
            task = store.create_task("bench", f"job {n}", parent=opt.id,
                                     parameters={f"General/{k}": v
                                                 for k, v in trial.params.items()})
            store.enqueue(task.id, "default")
            clock[0] = trial.started
            attempt = store.claim(task.id, trial.worker)
            if attempt is None:
                raise BenchError(f"could not claim job {n}")
            step = (trial.ended - trial.started) / len(trial.curve)
            store.append_scalars(task.id, [
                (TITLE, SERIES, k, v, trial.started + k * step)
                for k, v in enumerate(trial.curve, 1)], attempt=attempt)
            clock[0] = trial.ended
            store.finish(task.id, attempt, Status(trial.status))
        clock[0] = max(t.ended for t in trials) + 1.0
        store.set_status(opt.id, Status.completed)
        return opt.id
    finally:
        store.close()


# ----- Optuna's study ---------------------------------------------------------------------


def fill_optuna(storage: Any, name: str, trials: list[Trial]) -> Any:
    """The same trials as an Optuna study: completed -> COMPLETE (the last report is the
    value, like hpo's sign "max"), stopped -> PRUNED, failed -> FAIL."""
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState, create_trial

    dists = {
        "alpha": FloatDistribution(1e-6, 1e-1, log=True),
        "eta0": FloatDistribution(1e-4, 1e-1, log=True),
        "l1_ratio": FloatDistribution(0.0, 1.0),
        "epochs": IntDistribution(5, 15, step=5),
        "learning_rate": CategoricalDistribution(LEARNING_RATES),
        "batch_size": CategoricalDistribution(BATCH_SIZES),
    }
    states = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED,
              "failed": TrialState.FAIL}
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    frozen = [create_trial(
        params=t.params, distributions=dists, state=states[t.status],
        value=t.curve[-1] if t.status == "completed" else None,
        intermediate_values=dict(enumerate(t.curve, 1))) for t in trials]
    study.add_trials(frozen)
    return study


def fill_optuna_rdb(url: str, name: str, trials: list[Trial], model: Any) -> None:
    """The in-memory study ``model`` (the same trials) copied into an RDB storage by bulk
    inserts into Optuna's own tables. ``add_trials`` on an RDB storage costs 12-20 ms per
    trial of ORM work (about 80 statements each: 60 s for 3,000 trials on 2 cores), more
    than the rest of the bench; the copy is checked against the model by reading it back
    through Optuna. Timestamps are the run's (``create_trial`` cannot set them)."""
    import datetime as dt

    import optuna
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models as M
    from sqlalchemy import func, select

    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    rdb = optuna.storages.RDBStorage(url)
    finite = M.TrialValueModel.TrialValueType.FINITE
    inter_finite = M.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE

    def utc(seconds: float) -> dt.datetime:  # Optuna keeps naive UTC in the database
        return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)

    try:
        with rdb.engine.begin() as conn:
            # Explicit ids after the highest in use (a PostgreSQL database may hold other
            # studies of this run); nothing inserts through the sequences afterwards.
            base = conn.execute(select(func.coalesce(func.max(
                M.TrialModel.__table__.c.trial_id), 0))).scalar_one()
            rows: dict[str, list[dict[str, Any]]] = {"t": [], "p": [], "v": [], "i": []}
            for k, (frozen, trial) in enumerate(zip(model.trials, trials, strict=True)):
                tid = base + k + 1
                rows["t"].append({"trial_id": tid, "number": k, "study_id": study._study_id,
                                  "state": frozen.state, "datetime_start": utc(trial.started),
                                  "datetime_complete": utc(trial.ended)})
                rows["p"] += [{"trial_id": tid, "param_name": key,
                               "param_value": frozen.distributions[key].to_internal_repr(v),
                               "distribution_json": distribution_to_json(
                                   frozen.distributions[key])}
                              for key, v in frozen.params.items()]
                if frozen.values is not None:
                    rows["v"].append({"trial_id": tid, "objective": 0,
                                      "value": frozen.values[0], "value_type": finite})
                rows["i"] += [{"trial_id": tid, "step": step, "intermediate_value": v,
                               "intermediate_value_type": inter_finite}
                              for step, v in frozen.intermediate_values.items()]
            for key, model_cls in (("t", M.TrialModel), ("p", M.TrialParamModel),
                                   ("v", M.TrialValueModel),
                                   ("i", M.TrialIntermediateValueModel)):
                if rows[key]:
                    conn.execute(model_cls.__table__.insert(), rows[key])
        copy = load_study(rdb, name).trials
        want = [(t.number, t.state, t.params, t.values, t.intermediate_values)
                for t in model.trials]
        if [(t.number, t.state, t.params, t.values, t.intermediate_values)
                for t in copy] != want:
            raise BenchError("the bulk copy of the Optuna study does not read back the same")
    finally:
        rdb.remove_session()
        rdb.engine.dispose()


def optuna_plots(study: Any) -> list[Any]:
    import optuna.visualization as ov

    return [ov.plot_parallel_coordinate(study), ov.plot_optimization_history(study),
            ov.plot_intermediate_values(study)]


def load_study(storage: Any, name: str) -> Any:
    """A new study object on the RDB storage: ``load_study`` wraps the RDBStorage in a
    new cache, so every trial is read from the database, as a fresh process would."""
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


# ----- measuring --------------------------------------------------------------------------


@dataclass
class Timing:
    samples_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else math.nan

    @property
    def min(self) -> float:
        return min(self.samples_ms) if self.samples_ms else math.nan


def measure(fn: Callable[[], Any], repeats: int, budget_s: float) -> Timing:
    """Up to ``repeats`` wall-clock timings of ``fn``, fewer (at least 3) once
    ``budget_s`` is spent, so the slow rows at 3,000 jobs keep the run short. The first
    call warms up (imports, plotly's validators, SQLite's page cache) and is not
    counted, unless it took over a second: then a few ms of warming do not matter."""
    return measure_phases(lambda: {"": _ms(fn)}, repeats, budget_s)[""]


def _ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def measure_phases(fn: Callable[[], dict[str, float]], repeats: int, budget_s: float
                   ) -> dict[str, Timing]:
    """``measure`` for a call that times its own phases (ms by name): one sample per
    call for each phase."""
    first = fn()
    samples = [first] if sum(first.values()) > 1000 else []
    spent = time.perf_counter()
    while len(samples) < repeats:
        samples.append(fn())
        if len(samples) >= min(3, repeats) and time.perf_counter() - spent > budget_s:
            break
    return {k: Timing([s[k] for s in samples]) for k in first}


def total(phases: dict[str, Timing], *names: str) -> Timing:
    """The sum of some phases, sample by sample (they come from the same calls)."""
    count = len(phases[names[0]].samples_ms)
    return Timing([sum(phases[k].samples_ms[i] for k in names) for i in range(count)])


@dataclass
class Row:
    name: str
    hpo: Timing
    peer: Timing | None
    peer_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "peer_name": self.peer_name,
                "hpo_ms": self.hpo.samples_ms,
                "peer_ms": self.peer.samples_ms if self.peer else None}


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


# ----- the live view ----------------------------------------------------------------------


@contextlib.contextmanager
def ui_server(store_url: str, timeout_s: float = 60.0) -> Iterator[int]:
    """``hpo ui --port 0`` in a subprocess; yields its port (read from the line it prints
    at start), and stops it (SIGTERM, then SIGKILL) afterwards."""
    exe = Path(sys.executable).with_name("hpo")
    cmd = ([str(exe)] if exe.exists() else
           [sys.executable, "-c", "import sys; from hpo.cli.main import main; sys.exit(main())"])
    proc = subprocess.Popen([*cmd, "ui", "--port", "0", "--store", store_url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # readline() blocks: a timer kills a server that neither prints its URL nor exits.
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    try:
        port = None
        assert proc.stdout is not None
        while port is None:
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"hpo ui exited ({proc.wait()}) before printing its URL")
            if (m := re.search(r"http://[^:]+:(\d+)/", line)) is not None:
                port = int(m.group(1))
        watchdog.cancel()
        yield port
    finally:
        watchdog.cancel()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class Client:
    """One keep-alive HTTP connection, as a browser's poll would use."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str, etag: str | None = None) -> tuple[int, str | None, int]:
        headers = {"If-None-Match": etag} if etag else {}
        try:
            self.conn.request("GET", path, headers=headers)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # uvicorn closes a connection idle for 5 s; a browser would reconnect too.
            self.conn.close()
            self.conn.request("GET", path, headers=headers)
            resp = self.conn.getresponse()
        body = resp.read()
        return resp.status, resp.getheader("ETag"), len(body)

    def close(self) -> None:
        self.conn.close()


# ----- one size ---------------------------------------------------------------------------


def optuna_phases(rdb: Any, name: str, out: Path, png: bool = False) -> dict[str, float]:
    """What a report or a live page of the Optuna study costs, phase by phase, from the
    database: read (load_study + every trial), the three plots, their JSON (what a page
    would be sent), each as a self-contained HTML file like hpo's (plotly.js inline),
    and the PNGs (one browser for all, as hpo's ``write_pngs``)."""
    import plotly.io as pio

    from hpo.report.files import PNG_HEIGHT, PNG_WIDTH, write_html

    ms: dict[str, float] = {}
    start = time.perf_counter()
    study = load_study(rdb, name)
    study.trials  # noqa: B018 - the read itself; the plots then use Optuna's cache
    ms["read"] = (t := time.perf_counter()) - start
    figs = optuna_plots(study)
    ms["plots"] = (start := time.perf_counter()) - t
    json.dumps([json.loads(f.to_json()) for f in figs])
    ms["json"] = (t := time.perf_counter()) - start
    for k, fig in enumerate(figs):
        write_html(fig, out / f"{k}.html")
    ms["html"] = (start := time.perf_counter()) - t
    if png:
        pio.write_images(figs, [out / f"{k}.png" for k in range(len(figs))],
                         width=PNG_WIDTH, height=PNG_HEIGHT)
        ms["png"] = time.perf_counter() - start
    return {k: v * 1000 for k, v in ms.items()}


def bench_size(n: int, args: argparse.Namespace, work: Path, pg_url: str | None,
               png: bool) -> dict[str, Any]:
    import optuna

    from hpo.report import figures as F
    from hpo.report.data import load_report
    from hpo.report.files import write_report
    from hpo.store import open_store

    t0 = time.time() - 86400  # the run happened yesterday
    trials = make_trials(n, seed=n, t0=t0)
    sqlite_url = f"sqlite:///{work / f'store-{n}.db'}"
    start = time.perf_counter()
    opt_id = fill_hpo(sqlite_url, trials, t0)
    fill_hpo_s = time.perf_counter() - start
    start = time.perf_counter()
    mem_study = fill_optuna(None, f"mem-{n}", trials)
    fill_mem_s = time.perf_counter() - start
    rdb_url = f"sqlite:///{work / f'optuna-{n}.db'}"
    rdb_name = f"rdb-{n}"
    start = time.perf_counter()
    fill_optuna_rdb(rdb_url, rdb_name, trials, mem_study)
    fill_rdb_s = time.perf_counter() - start
    print(f"\nN = {n}: filled hpo's store in {fill_hpo_s:.1f} s, Optuna in memory in "
          f"{fill_mem_s:.1f} s (add_trials), Optuna's SQLite file in {fill_rdb_s:.1f} s "
          "(bulk copy, checked)", flush=True)
    # One RDBStorage (engine, schema check) for all the load_study calls, as hpo's store
    # is opened once; each load_study still reads every trial (a fresh cache).
    rdb = optuna.storages.RDBStorage(rdb_url)
    reps, budget = args.repeats, args.budget_s
    store = open_store(sqlite_url)
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        print_row(row)

    def pair(name: str, hpo_fn: Callable[[], Any], peer_name: str,
             peer_fn: Callable[[], Any]) -> None:
        add(Row(name, measure(hpo_fn, reps, budget), measure(peer_fn, reps, budget),
                peer_name))

    try:
        data = load_report(store, opt_id)
        if len(data.launched) != n:
            raise BenchError(f"the report has {len(data.launched)} jobs, not {n}")
        print_header()
        # The peer's database rows all come from the same calls, phase by phase: one
        # load_study + three plots costs 6-7 s at 3,000 trials.
        oout = work / f"optuna-report-{n}"
        oout.mkdir()
        peer = measure_phases(lambda: optuna_phases(rdb, rdb_name, oout), reps, budget)
        add(Row("read from SQLite: load_report", measure(
            lambda: load_report(store, opt_id), reps, budget), peer["read"],
            "load_study + .trials"))
        pair("parallel coordinates (data in memory)", lambda: F.parallel_coordinates(data),
             "plot_parallel_coordinate",
             lambda: optuna.visualization.plot_parallel_coordinate(mem_study))
        pair("objective per job (data in memory)", lambda: F.objective_per_job(data),
             "plot_optimization_history",
             lambda: optuna.visualization.plot_optimization_history(mem_study))
        pair("learning curves (data in memory)", lambda: F.learning_curves(data),
             "plot_intermediate_values",
             lambda: optuna.visualization.plot_intermediate_values(mem_study))
        add(Row("build_figures, all 5 (data in memory)",
                measure(lambda: F.build_figures(data), reps, budget), None))
        add(Row("report from SQLite (load + 5 figures)",
                measure(lambda: F.build_figures(load_report(store, opt_id)), reps, budget),
                total(peer, "read", "plots"), "load_study + 3 plots"))
        live, ui_rss = bench_live(sqlite_url, opt_id, args, total(peer, "read", "plots",
                                                                  "json"), "SQLite")
        rows.extend(live)
        out = work / f"report-{n}"
        add(Row("write_report(png=False)",
                measure(lambda: write_report(store, opt_id, out, png=False), reps, budget),
                total(peer, "read", "plots", "html"), "load_study + 3 plots as HTML"))
        if png:
            hpo_png = Timing([_ms(lambda: write_report(store, opt_id, out, png=True))])
            if not list(out.glob("*.png")):
                print("  (hpo wrote no PNG: see write_report's png_skipped)")
            with_png = optuna_phases(rdb, rdb_name, oout, png=True)
            add(Row("write_report(png=True), once", hpo_png,
                    Timing([sum(with_png.values()) - with_png["json"]]),
                    "load_study + 3 plots as HTML + PNG"))
    finally:
        store.close()
        rdb.remove_session()
        rdb.engine.dispose()

    if pg_url is not None:
        rows += bench_postgres(n, trials, t0, pg_url, args, mem_study, work)
    rss = peak_rss_mib()
    print(f"  peak RSS so far: this process {rss:.0f} MiB, hpo ui server {ui_rss:.0f} MiB")
    return {"jobs": n, "fill_s": {"hpo": fill_hpo_s, "optuna_memory": fill_mem_s,
                                  "optuna_sqlite_bulk": fill_rdb_s},
            "rows": [r.to_dict() for r in rows], "peak_rss_mib": rss, "ui_peak_rss_mib": ui_rss}


def bench_live(store_url: str, opt_id: str, args: argparse.Namespace, peer: Timing | None,
               where: str) -> tuple[list[Row], float]:
    """GET the optimization's JSON from a real ``hpo ui``: the full answer, then the
    conditional poll that finds nothing changed (304). Returns the rows and the peak
    RSS of the servers so far."""
    rows: list[Row] = []
    path = f"/api/optimizations/{opt_id}"
    with ui_server(store_url) as port:
        client = Client(port)
        try:
            status, etag, size = client.get(path)
            if status != 200 or not etag:
                raise BenchError(f"GET {path}: {status}, ETag {etag!r}")

            tops = itertools.count(11)

            def full() -> None:
                # Another top-k each time: a view the answer cache has not built yet.
                if client.get(f"{path}?top={next(tops) % 90 + 10}")[0] != 200:
                    raise BenchError("the full GET did not answer 200")

            def shared() -> None:  # what a second page polling the same view gets
                if client.get(path)[0] != 200:
                    raise BenchError("the shared GET did not answer 200")

            def not_modified() -> None:
                if client.get(path, etag)[0] != 304:
                    raise BenchError("the conditional GET did not answer 304")

            rows.append(Row(f"GET /api/optimizations/{{id}} ({where}, {size / 1024:.0f} KiB)",
                            measure(full, args.http_repeats, args.budget_s), peer,
                            "load_study + 3 plots + to_json"))
            print_row(rows[-1])
            rows.append(Row(f"same GET from another page: the answer cache ({where})",
                            measure(shared, args.http_repeats, args.budget_s), None))
            print_row(rows[-1])
            rows.append(Row(f"same GET, If-None-Match: 304 ({where})",
                            measure(not_modified, args.http_repeats, args.budget_s), None))
            print_row(rows[-1])
        finally:
            client.close()
    return rows, peak_rss_mib(resource.RUSAGE_CHILDREN)


def bench_postgres(n: int, trials: list[Trial], t0: float, url: str,
                   args: argparse.Namespace, mem_study: Any, work: Path) -> list[Row]:
    """The database rows again on PostgreSQL: hpo's store and Optuna's RDB storage in the
    same fresh database (their tables do not collide)."""
    import optuna

    from hpo.report import figures as F
    from hpo.report.data import load_report
    from hpo.store import open_store

    opt_id = fill_hpo(url, trials, t0)
    name = f"pg-{n}"
    fill_optuna_rdb(url, name, trials, mem_study)
    rdb = optuna.storages.RDBStorage(url)
    store = open_store(url)
    oout = work / f"optuna-pg-{n}"
    oout.mkdir()
    rows = []
    try:
        peer = measure_phases(lambda: optuna_phases(rdb, name, oout), args.repeats,
                              args.budget_s)
        for label, hpo_fn, peer_label, peer_t in (
            ("read from PostgreSQL: load_report", lambda: load_report(store, opt_id),
             "load_study + .trials", peer["read"]),
            ("report from PostgreSQL (load + 5 figures)",
             lambda: F.build_figures(load_report(store, opt_id)),
             "load_study + 3 plots", total(peer, "read", "plots")),
        ):
            rows.append(Row(label, measure(hpo_fn, args.repeats, args.budget_s), peer_t,
                            peer_label))
            print_row(rows[-1])
    finally:
        store.close()
        rdb.remove_session()
        rdb.engine.dispose()
    live, _ = bench_live(url, opt_id, args, total(peer, "read", "plots", "json"),
                         "PostgreSQL")
    return rows + live


# ----- output -----------------------------------------------------------------------------


def print_header() -> None:
    print(f"  {'operation':<52} {'hpo ms':>9} {'(min)':>8}  {'peer ms':>9} {'(min)':>8}"
          f" {'ratio':>6}  peer")


def print_row(row: Row) -> None:
    h = row.hpo
    if row.peer is None:
        print(f"  {row.name:<52} {h.median:>9.1f} {h.min:>8.1f}  {'':>9} {'':>8} {'':>6}"
              f"  (n={len(h.samples_ms)})", flush=True)
        return
    p = row.peer
    print(f"  {row.name:<52} {h.median:>9.1f} {h.min:>8.1f}  {p.median:>9.1f} {p.min:>8.1f}"
          f" {h.median / p.median:>6.2f}  {row.peer_name} (n={len(h.samples_ms)}/"
          f"{len(p.samples_ms)})", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="100,1000,3000",
                   help="optimization sizes, comma-separated (default: 100,1000,3000)")
    p.add_argument("--repeats", type=int, default=5, help="timings per operation (5)")
    p.add_argument("--http-repeats", type=int, default=20, help="timings per GET (20)")
    p.add_argument("--budget-s", type=float, default=6.0,
                   help="stop repeating an operation after this many seconds, once it "
                   "has 3 timings (default 6)")
    p.add_argument("--pg-admin-url", default=None,
                   help="also run on PostgreSQL: a URL that may create databases, e.g. "
                   "postgresql+psycopg://postgres@127.0.0.1:5432/postgres; a fresh "
                   "database is created and dropped")
    p.add_argument("--no-png", action="store_true",
                   help="skip the PNG row (run once, at the largest size)")
    p.add_argument("--quick", action="store_true", help="smoke run: N = 100, 2 repeats")
    p.add_argument("--json", default=None, help="write every timing to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.repeats, args.http_repeats = "100", 2, 4
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(x) for x in args.jobs.split(",") if x.strip()]
    # Optuna logs a line per trial added and warns that add_trials is experimental.
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    print(f"report bench: N = {sizes}, {args.repeats} repeats ({args.http_repeats} per "
          f"GET), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, Optuna "
          f"{optuna.__version__}")
    results = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hpo-bench-report-")))
        pg_url = (stack.enter_context(postgres_database(args.pg_admin_url, "hpo_bench_report"))
                  if args.pg_admin_url else None)
        # PNGs once, at the largest size: a browser start and a render of each figure
        # take seconds on both sides, and the largest is where the size shows.
        chromium = any(shutil.which(b) for b in ("chromium", "chromium-browser",
                                                  "google-chrome"))
        if not chromium and not args.no_png:
            print("(no Chromium found: no PNG row)")
        for n in sizes:
            png = chromium and not args.no_png and n == max(sizes)
            results.append(bench_size(n, args, work, pg_url, png))
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
