"""hpo against Optuna on the same trial, through the whole loop a user sees.

The trial (``bench/trials/``): the Branin function of (x1, x2) reported 5 times
(``report_scalar("objective", "branin", value, iteration=i)`` through hpo's SDK; printed
and passed to ``trial.report`` for Optuna). Every case runs a real optimization with
random search, 2 trials at a time:

* hpo: ``hpo-controller start hpo.yaml --json`` (a generated yaml, ``strategy: random``,
  concurrency 2) with 2 ``hpo-agent`` processes of 1 slot each, started and registered
  before the clock starts (as agents on a cluster are). ``hpo-embedded``: the default
  SQLite store and embedded broker in a temporary ``HPO_HOME``; ``hpo-redis``: Redis broker
  and a scratch PostgreSQL database.
* Optuna: 2 worker processes, each looping ask -> run the trial -> tell for half the
  trials (``bench/optuna_peer.py``). ``optuna-journal``: a subprocess per trial
  (``python trial.py``), JournalStorage on a file, every report passed to
  ``trial.report`` (stored, as hpo stores them); ``optuna-journal-final``: the same
  telling only the final value; ``optuna-pg``: a subprocess per trial on a PostgreSQL
  RDBStorage; ``optuna-inproc``: the trial called in the worker, PostgreSQL.

Wall time: from launching the controller (hpo) or the two workers (Optuna) to their exit,
seen at once through a pidfd.
Overhead per trial = wall x 2 workers / trials - the trial's own work time (the same
function loop timed in this process: ~0 for the trivial trial, 1 s for the 1 s trial).

Groups of cases (``--only`` takes case or group names):

* ``trivial``: the six cases above, ``--trials`` each; ratios hpo / optuna-journal and
  hpo / optuna-journal-final.
* ``util``: 1 s trials (10 reports, 0.1 s apart), ``--util-trials``: utilization =
  trials x 1 s / (wall x 2 workers), for hpo-embedded, hpo-redis and optuna-journal;
  steady, over the span from the first trial's first line to the last trial's end;
  and the hand-off, the median from a trial's last line to the next trial's first
  line on the same worker (the trial scripts note their parent's pid).
* ``heavy``: a trial that imports sklearn.ensemble and scipy.optimize first
  (``--heavy-trials``): hpo-embedded without and with ``hpo-agent --preload
  sklearn.ensemble,scipy.optimize`` (skipped with a note while the agent has no
  ``--preload``), and optuna-journal.
* ``cold``: from launching ``hpo-controller start --local-agents 2`` (embedded, a fresh
  ``HPO_HOME``) to the first trial's first line, against 2 fresh Optuna journal workers.

Controller CPU per job: the ``hpo-controller`` process's CPU time, all of it (start-up
included, from the kernel's accounting once it exits) and steady (psutil, between the
first and the last finished job it prints) divided by the jobs in between.

Cases run round-robin, ``--rounds`` times, so each round sees about the same machine;
the tables give medians over rounds. Every wait has a deadline; processes, temporary
folders, scratch databases and Redis keys go on every exit (Ctrl-C and SIGTERM too).

Run it: ``python bench/vs_optuna.py`` (``--quick`` for a smoke run, ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from dispatch import (  # bench/ is on sys.path: run as a script
    BenchError,
    check_redis,
    redis_cleanup,
    wait_until,
)
from scratch_db import postgres_database

HERE = Path(__file__).resolve().parent
TRIALS = HERE / "trials"
sys.path.insert(0, str(TRIALS))
from branin import FIRST_LINE_ENV, LAST_LINE_ENV, work  # noqa: E402

WORKERS = 2  # concurrency of every case: 2 agents x 1 slot, or 2 Optuna workers
PRELOAD = "sklearn.ensemble,scipy.optimize"
WARM_LOG = ": warm, preloaded "  # an agent's log line: a slot's warm process is ready
# Targets from issue 14 (ratios of medians from one run).
TARGET_RATIO = {"hpo-embedded": 1.2, "hpo-redis": 0.9}  # overhead / optuna-journal's
TARGET_UTILIZATION = 0.98
TARGET_PRELOAD_RATIO = 0.1  # overhead with --preload / without
TARGET_COLD_S = 0.5  # embedded, launch -> first trial's first line
TARGET_CONTROLLER_CPU_MS = 3.0


# ----- cases -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What one trial does: ``reports`` reports over ``seconds`` of sleep, optionally
    behind the heavy imports."""

    reports: int
    seconds: float
    heavy: bool = False


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # trivial | util | heavy | cold
    system: str  # hpo | optuna
    backend: str  # embedded | redis (hpo); journal | pg (optuna)
    label: str
    inprocess: bool = False
    preload: bool = False
    final_only: bool = False  # Optuna: no trial.report, only the last value told

    @property
    def needs_postgres(self) -> bool:
        return self.backend in ("redis", "pg")


CASES = [
    Case("hpo-embedded", "trivial", "hpo", "embedded", "hpo, embedded (SQLite + SQLite)"),
    Case("hpo-redis", "trivial", "hpo", "redis", "hpo, Redis + PostgreSQL"),
    Case("optuna-journal", "trivial", "optuna", "journal",
         "Optuna, a subprocess per trial, journal file"),
    Case("optuna-journal-final", "trivial", "optuna", "journal",
         "Optuna, a subprocess per trial, journal file, only the final value told",
         final_only=True),
    Case("optuna-pg", "trivial", "optuna", "pg", "Optuna, a subprocess per trial, PostgreSQL"),
    Case("optuna-inproc", "trivial", "optuna", "pg", "Optuna, in-process, PostgreSQL",
         inprocess=True),
    Case("util-hpo-embedded", "util", "hpo", "embedded", "hpo, embedded, 1 s trials"),
    Case("util-hpo-redis", "util", "hpo", "redis", "hpo, Redis + PostgreSQL, 1 s trials"),
    Case("util-optuna-journal", "util", "optuna", "journal",
         "Optuna, subprocess per trial, journal, 1 s trials"),
    Case("heavy-hpo", "heavy", "hpo", "embedded", "hpo, embedded, sklearn+scipy trial"),
    Case("heavy-hpo-preload", "heavy", "hpo", "embedded",
         f"hpo, embedded, sklearn+scipy trial, --preload {PRELOAD}", preload=True),
    Case("heavy-optuna-journal", "heavy", "optuna", "journal",
         "Optuna, subprocess per trial, journal, sklearn+scipy trial"),
    Case("cold-hpo-embedded", "cold", "hpo", "embedded",
         "hpo-controller start --local-agents 2, embedded: launch -> first trial line"),
    Case("cold-optuna-journal", "cold", "optuna", "journal",
         "2 Optuna journal workers: launch -> first trial line"),
]
GROUPS = ("trivial", "util", "heavy", "cold")
COLD_TRIALS = 2
# Job lines of one display refresh come together; a gap this long starts a new refresh.
BATCH_GAP_S = 0.05
HURRIED_STOP_S = 3.0  # after Ctrl-C: how long a process may take to stop cleanly


def shape_of(case: Case) -> Shape:
    if case.group == "util":
        return Shape(reports=10, seconds=1.0)
    return Shape(reports=5, seconds=0.0, heavy=case.group == "heavy")


def trials_of(case: Case, args: argparse.Namespace) -> int:
    return {"trivial": args.trials, "util": args.util_trials, "heavy": args.heavy_trials,
            "cold": COLD_TRIALS}[case.group]


def select_cases(only: str | None, skip_postgres: bool) -> list[Case]:
    """The cases ``--only`` names (cases or groups), in the table's order."""
    cases = CASES
    if only:
        names = {n.strip() for n in only.split(",") if n.strip()}
        known = {c.name for c in CASES} | set(GROUPS)
        if unknown := sorted(names - known):
            raise BenchError(f"--only: unknown case {unknown[0]!r}; pick from "
                             f"{', '.join([*GROUPS, *(c.name for c in CASES)])}")
        cases = [c for c in CASES if c.name in names or c.group in names]
    if skip_postgres:
        cases = [c for c in cases if not c.needs_postgres]
    return cases


# ----- results -----------------------------------------------------------------------


@dataclass
class Run:
    """One case in one round."""

    case: str
    round: int
    trials: int
    ok: bool = False
    wall_s: float = math.nan
    completed: int = 0
    controller_cpu_s: float = math.nan  # hpo: the whole process, start-up included
    controller_steady_ms: float = math.nan  # hpo: per job, first to last finished job
    first_line_s: float = math.nan  # cold start
    # From the first trial's first line to the last trial's end: the run without its
    # start-up (launch, imports, agents) and its end (summary), for steady utilization.
    steady_s: float = math.nan
    handoff_ms: float = math.nan  # median, a trial's last line -> the next one's first
    load: float = field(default_factory=lambda: os.getloadavg()[0])  # 1-min, at its start
    note: str = ""

    def overhead_ms(self, work_s: float) -> float:
        return (self.wall_s * WORKERS / self.trials - work_s) * 1000

    def utilization(self, work_s: float) -> float:
        return self.trials * work_s / (self.wall_s * WORKERS)

    def steady_utilization(self, work_s: float) -> float:
        """Utilization between the first trial's first line and the last trial's end:
        the hand-offs between trials alone, start-up and shutdown left out."""
        return self.trials * work_s / (self.steady_s * WORKERS)


@dataclass
class Results:
    work_s: dict[str, float]  # shape key -> bare trial work, seconds
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, name: str) -> list[Run]:
        return [r for r in self.runs if r.case == name and r.ok]

    def median(self, name: str, metric: Callable[[Run], float]) -> float:
        values = [metric(r) for r in self.of(name)]
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else math.nan


def shape_key(shape: Shape) -> str:
    return f"{shape.reports}x{shape.seconds:g}s"


def measure_work(shape: Shape, repeats: int = 5) -> float:
    """The trial's own work time: the same function loop, in this process."""
    times = []
    for _ in range(repeats if shape.seconds else 200):
        start = time.perf_counter()
        work(2.5, 7.5, shape.reports, shape.seconds, lambda value, i: None)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----- processes ---------------------------------------------------------------------


class Processes:
    """Every process the bench starts, in a session of its own (so a Ctrl-C reaches them
    only through ``close``), with their descendants: ended on every exit path."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.lock = threading.Lock()
        self.hurry = False  # interrupted: a short grace before SIGKILL

    def interrupt(self, signum: int, frame: Any) -> None:
        """SIGINT / SIGTERM: unwind through every clean-up, quickly."""
        self.hurry = True
        print(f"vs_optuna: {signal.Signals(signum).name}: cleaning up", file=sys.stderr,
              flush=True)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        sys.exit(128 + signum)

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(command, start_new_session=True, **kwargs)
        with self.lock:
            self.procs.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen[Any]], timeout: float = 30.0) -> list[str]:
        """SIGTERM (a clean shutdown), then SIGKILL for what is left after ``timeout``,
        descendants too; returns a note per process that had to be killed."""
        notes = []
        if self.hurry:
            timeout = min(timeout, HURRIED_STOP_S)
        family = {p.pid: descendants(p.pid) for p in procs}
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                notes.append(f"{Path(str(proc.args[0])).name} (pid {proc.pid}) ignored "
                             f"SIGTERM for {timeout:g}s: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for proc in procs:
            for child in family[proc.pid]:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            with self.lock:
                self.procs.remove(proc)
        return notes

    def close(self) -> None:
        with self.lock:
            left = list(self.procs)
        if left:
            self.stop(left, timeout=10)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def command(name: str) -> list[str]:
    """A console script of this interpreter's environment (what a user types)."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return [str(path)]
    module = {"hpo-agent": "hpo.agent.cli", "hpo-controller": "hpo.controller.cli"}[name]
    return [sys.executable, "-m", module]


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def agent_has_preload() -> bool:
    """Whether this hpo-agent keeps warm, preloading slots (issue 14): then each run
    waits for them before its clock starts."""
    out = subprocess.run([*command("hpo-agent"), "--help"], capture_output=True, text=True,
                         timeout=60)
    return "--preload" in out.stdout


# ----- hpo ---------------------------------------------------------------------------


@dataclass
class HpoSetup:
    """Where one hpo run keeps its tasks and messages."""

    home: Path
    store_url: str
    broker_url: str
    queue: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
        env.update(HPO_HOME=str(self.home), HPO_STORE_URL=self.store_url,
                   HPO_BROKER_URL=self.broker_url, PYTHONUNBUFFERED="1", **extra)
        return env


def hpo_yaml(path: Path, shape: Shape, trials: int, queue: str) -> None:
    script = "heavy_trial.py" if shape.heavy else "hpo_trial.py"
    args = ["hpo_trial.py"] if shape.heavy else []
    args += ["--reports", str(shape.reports), "--seconds", str(shape.seconds)]
    config = {
        "base_task": {"script": str(TRIALS / script), "project": "bench",
                      "name": "branin", "args": args,
                      "working_dir": str(path.parent)},
        "hyper_parameters": [
            {"type": "uniform", "name": "x1", "min_value": -5, "max_value": 10},
            {"type": "uniform", "name": "x2", "min_value": 0, "max_value": 15}],
        "objective": {"title": "objective", "series": "branin", "sign": "min"},
        "strategy": "random", "strategy_kwargs": {"seed": 1},
        "execution_queue": queue,
        "max_number_of_concurrent_tasks": WORKERS,
        "total_max_jobs": trials,
    }
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML


@contextlib.contextmanager
def hpo_setup(case: Case, args: argparse.Namespace, workdir: Path) -> Iterator[HpoSetup]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    home = workdir / "hpo-home"
    if case.backend == "embedded":
        yield HpoSetup(home, f"sqlite:///{home / 'hpo.db'}",
                       f"sqla+sqlite:///{home / 'broker.db'}", queue)
        return
    check_redis(args.redis_url)
    with postgres_database(args.pg_admin_url, prefix="hpo_vs_optuna") as store_url:
        try:
            yield HpoSetup(home, store_url, args.redis_url, queue)
        finally:
            redis_cleanup(args.redis_url, queue)()


def start_agents(procs: Processes, setup: HpoSetup, workdir: Path, preload: bool,
                 warm_agents: bool, env: dict[str, str]) -> list[subprocess.Popen[Any]]:
    """``env``: set for the agents, so their trials have it (where trials note times)."""
    from hpo.store import open_store

    # Created here, before the agents: none of them races another to create it.
    setup.home.mkdir(parents=True, exist_ok=True)
    store = open_store(setup.store_url)
    agents, names = [], []
    for i in range(WORKERS):
        name = f"bench-{setup.queue}-{i}"
        extra = ["--preload", PRELOAD] if preload else []
        with (workdir / f"{name}.log").open("wb") as log:
            agents.append(procs.start(
                [*command("hpo-agent"), "--queue", setup.queue, "--name", name, *extra],
                env=setup.env(**env), stdout=log, stderr=subprocess.STDOUT))
        names.append(name)

    def registered() -> bool:
        for agent, name in zip(agents, names, strict=True):
            if agent.poll() is not None:
                raise BenchError(f"agent {name} exited at start:\n"
                                 f"{tail(workdir / f'{name}.log')}")
        return set(names) <= {w.name for w in store.list_workers()}

    def warm() -> bool:
        # What the agent logs once a slot's warm process has imported hpo and the
        # preloads: tasks before that wait for it, which is start-up, not per trial.
        return all(WARM_LOG in (workdir / f"{name}.log").read_text(errors="replace")
                   for name in names)

    try:
        wait_until("the agents to register", registered, timeout=90, period=0.2)
        if warm_agents:
            wait_until("the agents' slots to be warm", warm, timeout=90, period=0.1)
    except BaseException:
        procs.stop(agents)
        raise
    finally:
        store.close()
    return agents


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ControllerWatch:
    """Reads ``hpo-controller start --json`` lines: counts finished jobs by status and
    samples the controller's CPU time whenever it reports finished jobs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.ps = psutil.Process(proc.pid)
        self.status: dict[str, int] = {}
        self.samples: list[tuple[int, float]] = []  # (jobs finished, CPU seconds)
        self.other: list[str] = []
        self.last_line = -math.inf
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self.other.append(line.rstrip())
                continue
            if event.get("event") != "job":
                continue
            now = time.monotonic()
            if now - self.last_line > BATCH_GAP_S:
                # The first line of a display refresh: the CPU so far, against the jobs
                # the earlier refreshes printed.
                with contextlib.suppress(psutil.Error):
                    times = self.ps.cpu_times()
                    self.samples.append((sum(self.status.values()), times.user + times.system))
            self.last_line = now
            status = str(event.get("status"))
            self.status[status] = self.status.get(status, 0) + 1

    def steady_ms_per_job(self) -> float:
        """CPU per job from the first refresh that printed finished jobs to the last:
        start-up and the end left out (NaN with fewer than two refreshes)."""
        if len(self.samples) < 2 or self.samples[-1][0] == self.samples[0][0]:
            return math.nan
        (jobs0, cpu0), (jobs1, cpu1) = self.samples[0], self.samples[-1]
        return (cpu1 - cpu0) / (jobs1 - jobs0) * 1000


def run_hpo(case: Case, args: argparse.Namespace, run: Run, procs: Processes) -> None:
    shape = shape_of(case)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hpo-vs-")))
        setup = stack.enter_context(hpo_setup(case, args, workdir))
        config = workdir / "hpo.yaml"
        hpo_yaml(config, shape, run.trials, setup.queue)
        cold = case.group == "cold"
        first_line, last_line = workdir / "first-line", workdir / "last-line"
        lines = {FIRST_LINE_ENV: str(first_line), LAST_LINE_ENV: str(last_line)}
        agents = [] if cold else start_agents(procs, setup, workdir, case.preload,
                                              args.warm_agents, lines)
        stack.callback(lambda: notes_of(procs.stop(agents), run))
        local = ["--local-agents", str(WORKERS)] if cold else []
        env = setup.env(**lines)
        cpu_before = children_cpu_s()
        start = time.time()
        with (workdir / "controller.err").open("w") as err:
            ctrl = procs.start([*command("hpo-controller"), "start", str(config), "--json",
                                *local], env=env, stdout=subprocess.PIPE, stderr=err,
                               text=True)
        watch = ControllerWatch(ctrl)
        try:
            if cold:
                run.first_line_s = first_line_time(first_line, ctrl, timeout=120) - start
            wait_exit(ctrl, deadline_s(run.trials, shape))
        except BaseException:
            notes_of(procs.stop([ctrl]), run)
            raise
        run.wall_s = time.time() - start
        run.steady_s = steady_span(first_line, last_line)
        run.handoff_ms = handoff_ms(first_line, last_line)
        run.controller_cpu_s = children_cpu_s() - cpu_before
        procs.stop([ctrl])  # already gone: only forgets it
        watch.thread.join(timeout=10)
        run.controller_steady_ms = watch.steady_ms_per_job()
        run.completed = watch.status.get("completed", 0)
        run.ok = ctrl.returncode == 0 and run.completed == run.trials
        if not run.ok:
            logs = "".join(f"\n--- {p.name} ---\n{tail(p)}" for p in workdir.glob("*.log"))
            run.note = (f"hpo-controller exited {ctrl.returncode}, jobs by status "
                        f"{watch.status}; stderr: {tail(workdir / 'controller.err')}{logs}")


def noted(path: Path) -> list[tuple[float, int]]:
    """The (time, parent pid) lines the trials wrote to ``path`` (branin._note)."""
    rows = []
    for line in path.read_text().splitlines():
        t, parent = line.split()
        rows.append((float(t), int(parent)))
    return rows


def steady_span(first_lines: Path, last_lines: Path) -> float:
    """The last trial's end minus the first trial's first line; nan when the trials
    noted none (the in-process peer runs no trial script)."""
    try:
        first = min(t for t, _ in noted(first_lines))
        last = max(t for t, _ in noted(last_lines))
    except (OSError, ValueError):
        return math.nan
    return last - first


def handoff_ms(first_lines: Path, last_lines: Path) -> float:
    """The median hand-off on a worker: from a trial's last line to the next trial's
    first line under the same parent (an agent slot's warm process, an Optuna worker);
    nan without two trials on one worker, or without trial scripts (the in-process
    peer)."""
    try:
        firsts, lasts = noted(first_lines), noted(last_lines)
    except (OSError, ValueError):
        return math.nan
    gaps = []
    for end, parent in lasts:
        later = [t for t, p in firsts if p == parent and t > end]
        if later:
            gaps.append((min(later) - end) * 1000)
    return statistics.median(gaps) if gaps else math.nan


def first_line_time(path: Path, proc: subprocess.Popen[Any], timeout: float) -> float:
    """The first trial's first line: the earliest time a trial script wrote to ``path``."""
    def written() -> float | None:
        if proc.poll() is not None and not path.exists():
            raise BenchError(f"exited {proc.returncode} before any trial started")
        with contextlib.suppress(OSError, ValueError):
            return min(t for t, _ in noted(path))
        return None
    return float(wait_until("the first trial's first line", written, timeout, period=0.002))


def wait_exit(proc: subprocess.Popen[Any], timeout: float) -> None:
    """``proc.wait(timeout)``, woken by the exit itself: Popen's own wait with a timeout
    polls with sleeps of up to 50 ms, which would count in the wall time."""
    if proc.poll() is not None:
        return  # reaped already (first_line_time polls it): its pid may be another's now
    try:
        # Unreaped, the pid cannot be reused before the wait below reaps it.
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd here (an old kernel, not Linux)
        proc.wait(timeout)
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    proc.wait()


def deadline_s(trials: int, shape: Shape) -> float:
    """How long a run may take: generous, so only a hang trips it."""
    return 120 + 5 * trials * max(1.0, shape.seconds)


def notes_of(notes: list[str], run: Run) -> None:
    if notes:
        run.note = "; ".join(filter(None, [run.note, *notes]))


# ----- Optuna ------------------------------------------------------------------------


def run_optuna(case: Case, args: argparse.Namespace, run: Run, procs: Processes) -> None:
    shape = shape_of(case)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="optuna-vs-")))
        if case.backend == "pg":
            url = stack.enter_context(postgres_database(args.pg_admin_url,
                                                        prefix="optuna_vs_hpo"))
            where = ["--rdb", url]
            # The tables, untimed: hpo's agents create hpo's store before the clock too.
            subprocess.run([sys.executable, str(HERE / "optuna_peer.py"), *where, "--setup"],
                           check=True, timeout=120)
        else:
            where = ["--journal", str(workdir / "journal.log")]
        script = [str(TRIALS / "heavy_trial.py"), "optuna_trial.py"] if shape.heavy \
            else [str(TRIALS / "optuna_trial.py")]
        first_line = workdir / "first-line"
        last_line = workdir / "last-line"
        env = {**os.environ, FIRST_LINE_ENV: str(first_line), LAST_LINE_ENV: str(last_line),
               "PYTHONUNBUFFERED": "1"}
        shares = [run.trials // WORKERS + (i < run.trials % WORKERS) for i in range(WORKERS)]
        logs = [workdir / f"worker-{i}.err" for i in range(WORKERS)]
        start = time.time()
        workers = []
        for i, (n, log) in enumerate(zip(shares, logs, strict=True)):
            with log.open("w") as err:
                workers.append(procs.start(
                    [sys.executable, str(HERE / "optuna_peer.py"), *where, "--trials", str(n),
                     "--seed", str(i), "--reports", str(shape.reports), "--seconds",
                     str(shape.seconds), *(["--mode", "inprocess"] if case.inprocess else []),
                     *(["--final-only"] if case.final_only else []),
                     "--script", *script], env=env, stderr=err))
        try:
            if case.group == "cold":
                run.first_line_s = first_line_time(first_line, workers[0], timeout=120) - start
            deadline = time.monotonic() + deadline_s(run.trials, shape)
            for worker in workers:
                wait_exit(worker, max(0.1, deadline - time.monotonic()))
        except BaseException:
            notes_of(procs.stop(workers), run)
            raise
        run.wall_s = time.time() - start
        run.steady_s = steady_span(first_line, last_line)
        run.handoff_ms = handoff_ms(first_line, last_line)
        procs.stop(workers)
        run.completed = run.trials if all(w.returncode == 0 for w in workers) else 0
        run.ok = run.completed == run.trials
        if not run.ok:
            run.note = "an Optuna worker failed: " + " | ".join(tail(log) for log in logs)


# ----- one run of a case -------------------------------------------------------------


def run_case(case: Case, round_no: int, args: argparse.Namespace, procs: Processes,
             results: Results) -> Run:
    run = Run(case.name, round_no, trials_of(case, args))
    try:
        (run_hpo if case.system == "hpo" else run_optuna)(case, args, run, procs)
    except Exception as exc:  # a deadline, a scratch database, Redis: say it, go on
        run.ok, run.note = False, f"{type(exc).__name__}: {exc}"
    results.runs.append(run)
    work_s = results.work_s[shape_key(shape_of(case))]
    if not run.ok:
        print(f"  {case.name}: FAILED: {run.note}", flush=True)
    elif case.group == "cold":
        print(f"  {case.name}: first trial line {run.first_line_s:.3f} s after launch",
              flush=True)
    else:
        extra = ""
        if case.group == "util":
            extra = (f", utilization {run.utilization(work_s):.3f} "
                     f"({run.steady_utilization(work_s):.3f} steady), hand-off "
                     f"{run.handoff_ms:.1f} ms")
        if case.system == "hpo":
            extra += (f", controller CPU {run.controller_cpu_s / run.trials * 1000:.1f} "
                      f"ms/job ({run.controller_steady_ms:.1f} steady)")
        print(f"  {case.name}: {run.trials} trials in {run.wall_s:.2f} s "
              f"({run.trials / run.wall_s:.1f}/s), overhead "
              f"{run.overhead_ms(work_s):.1f} ms/trial{extra}", flush=True)
    return run


# ----- the report --------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ratio_line(label: str, value: float, target: float, *, at_most: bool = True) -> str:
    if math.isnan(value):
        return f"{label}: n/a (a case failed or did not run, or too few jobs for it)"
    ok = value <= target if at_most else value >= target
    sign = "<=" if at_most else ">="
    # Four digits: a value printed as its target must not read "MISSED" (0.978 vs 0.98).
    return f"{label}: {value:.4g} (target {sign} {target:g}: {verdict(ok)})"


COLUMNS = ("overhead ms/trial", "trials/s", "utilization", "controller CPU ms/job (steady)",
           "first line s")


def cells(results: Results, case: Case) -> list[str]:
    """The case's medians over rounds, formatted, in COLUMNS' order ('' where n/a)."""
    w = results.work_s[shape_key(shape_of(case))]
    med = functools.partial(results.median, case.name)
    if case.group == "cold":
        return ["", "", "", "", f"{med(lambda r: r.first_line_s):.3f}"]
    util = (f"{med(lambda r: r.utilization(w)):.3f} "
            f"({med(lambda r: r.steady_utilization(w)):.3f} steady; hand-off "
            f"{med(lambda r: r.handoff_ms):.1f} ms)"
            if case.group == "util" else "")
    cpu = ""
    if case.system == "hpo":
        cpu = (f"{med(lambda r: r.controller_cpu_s / r.trials * 1000):.1f} "
               f"({med(lambda r: r.controller_steady_ms):.1f})")
    return [f"{med(lambda r: r.overhead_ms(w)):.1f}", f"{med(lambda r: r.trials / r.wall_s):.1f}",
            util, cpu, ""]


def text_table(results: Results, cases: list[Case]) -> list[str]:
    widths = (18, 9, 38, 30, 12)
    lines = [f"{'case':22} " + " ".join(f"{c[:w]:>{w}}" for c, w in zip(
        COLUMNS, widths, strict=True)) + "  rounds ok"]
    for case in cases:
        runs = [r for r in results.runs if r.case == case.name]
        lines.append(f"{case.name:22} " + " ".join(f"{c:>{w}}" for c, w in zip(
            cells(results, case), widths, strict=True))
            + f"  {len(results.of(case.name))}/{len(runs)}")
    lines.append("(controller CPU: all of the hpo-controller process / in brackets steady, "
                 "between its first and last display refresh that printed finished jobs; "
                 "hand-off: a trial's last line to the next one's first line on a worker)")
    return lines


def markdown_table(results: Results, cases: list[Case]) -> list[str]:
    """The same table for bench/README.md."""
    lines = ["| case | what | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| `{case.name}` | {case.label} | " + " | ".join(cells(results, case)) + " |"
              for case in cases]
    return lines


def target_lines(results: Results, cases: list[Case]) -> list[str]:
    """The ratios and values issue 14 sets targets for, each with its verdict."""
    names = {c.name for c in cases}

    def med(name: str, metric: Callable[[Run, float], float]) -> float:
        if name not in names:
            return math.nan
        work_s = results.work_s[shape_key(shape_of(next(c for c in cases if c.name == name)))]
        return results.median(name, lambda r: metric(r, work_s))

    def overhead(name: str) -> float:
        return med(name, Run.overhead_ms)

    lines = []
    for peer in ("optuna-journal", "optuna-journal-final"):
        for name, target in TARGET_RATIO.items():
            if {name, peer} <= names:
                lines.append(ratio_line(f"ratio overhead {name} / {peer}",
                                        overhead(name) / overhead(peer), target))
    for name in ("util-hpo-embedded", "util-hpo-redis"):
        if name in names:
            lines.append(ratio_line(f"utilization {name}", med(name, Run.utilization),
                                    TARGET_UTILIZATION, at_most=False))
    if "util-optuna-journal" in names:
        lines.append(f"utilization util-optuna-journal (the peer): "
                     f"{med('util-optuna-journal', Run.utilization):.3f}")
    for name in ("util-hpo-embedded", "util-hpo-redis", "util-optuna-journal"):
        if name not in names:
            continue
        label = (f"steady utilization {name} (first trial's first line to last trial's "
                 "end)")
        steady = med(name, Run.steady_utilization)
        if name == "util-optuna-journal":
            lines.append(f"{label}: {steady:.3f}")
        else:  # judged too: the whole run's figure holds the start-up, a fixed cost
            lines.append(ratio_line(label, steady, TARGET_UTILIZATION, at_most=False))
    if {"heavy-hpo", "heavy-hpo-preload"} <= names:
        lines.append(ratio_line("ratio overhead heavy-hpo-preload / heavy-hpo",
                                overhead("heavy-hpo-preload") / overhead("heavy-hpo"),
                                TARGET_PRELOAD_RATIO))
    if {"heavy-hpo", "heavy-optuna-journal"} <= names:
        lines.append(f"ratio overhead heavy-hpo / heavy-optuna-journal: "
                     f"{overhead('heavy-hpo') / overhead('heavy-optuna-journal'):.2f}")
    if "cold-hpo-embedded" in names:
        cold = med("cold-hpo-embedded", lambda r, w: r.first_line_s)
        lines.append(ratio_line("cold start hpo-embedded (s)", cold, TARGET_COLD_S))
        if "cold-optuna-journal" in names:
            peer = med("cold-optuna-journal", lambda r, w: r.first_line_s)
            lines.append(f"cold start ratio hpo-embedded / optuna-journal: {cold / peer:.2f}")
    for case in cases:
        if case.system == "hpo" and case.group == "trivial":
            lines.append(ratio_line(
                f"controller CPU per job {case.name} (ms, steady)",
                med(case.name, lambda r, w: r.controller_steady_ms), TARGET_CONTROLLER_CPU_MS))
    return lines


def summary(results: Results, cases: list[Case]) -> list[str]:
    """Everything printed at the end: the table (medians over rounds), the target lines,
    the bare work and notes, and the same as Markdown for bench/README.md."""
    targets = target_lines(results, cases)
    lines = ["", *text_table(results, cases), "", *targets,
             "bare trial work (timed in this process): " + ", ".join(
                 f"{k} {v * 1000:.3f} ms" for k, v in results.work_s.items()),
             *(f"note: {n}" for n in results.notes),
             "", "--- for bench/README.md ---", *markdown_table(results, cases), "",
             *(f"- {line}" for line in targets)]
    return lines


# ----- command line ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="The same Branin trial through hpo (embedded; Redis + PostgreSQL) and "
        "through Optuna (a subprocess per trial on a journal file or PostgreSQL; "
        "in-process), 2 at a time, interleaved round by round: overhead per trial, "
        "trials/s, utilization with 1 s trials, a scikit-learn + SciPy trial with and "
        "without --preload, the cold start, controller CPU per job, and the ratios to "
        "issue 14's targets.",
        epilog="Cases (for --only; a group name selects its cases): " + "; ".join(
            f"{g}: " + ", ".join(c.name for c in CASES if c.group == g) for g in GROUPS)
        + ". Needs Redis on 127.0.0.1:6379 and a PostgreSQL that may create databases "
        "(postgres@127.0.0.1:5432, trust) unless --skip-postgres. Example: python "
        "bench/vs_optuna.py --only trivial --rounds 5")
    p.add_argument("--trials", type=int, help="trivial trials per case (200; --quick 10)")
    p.add_argument("--util-trials", type=int, help="1 s trials per case (40; --quick 4)")
    p.add_argument("--heavy-trials", type=int,
                   help="sklearn+scipy trials per case (40; --quick 4)")
    p.add_argument("--rounds", type=int, help="rounds over every case; medians over them "
                   "(3; --quick 1)")
    p.add_argument("--only", metavar="CASE[,CASE]", help="run these cases or groups only")
    p.add_argument("--skip-postgres", action="store_true",
                   help="leave out the cases that need PostgreSQL (and Redis)")
    p.add_argument("--quick", action="store_true",
                   help="small numbers for a smoke run (no meaningful timings)")
    p.add_argument("--json", metavar="PATH", help="also write every run and the summary here")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"))
    p.add_argument("--pg-admin-url", default=os.environ.get(
        "BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL URL allowed to create and drop databases")
    return p


def resolve_numbers(args: argparse.Namespace) -> None:
    quick = args.quick
    for name, full, small in (("trials", 200, 10), ("util_trials", 40, 4),
                              ("heavy_trials", 40, 4), ("rounds", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_numbers(args)
        cases = select_cases(args.only, args.skip_postgres)
    except BenchError as exc:
        print(f"vs_optuna: {exc}", file=sys.stderr)
        return 2
    procs = Processes()
    # Both unwind through the clean-up (SIGINT set even where a shell ignored it for a
    # background job).
    signal.signal(signal.SIGINT, procs.interrupt)
    signal.signal(signal.SIGTERM, procs.interrupt)
    results = Results({shape_key(s): measure_work(s)
                       for s in dict.fromkeys(shape_of(c) for c in cases)})
    args.warm_agents = agent_has_preload()
    if any(c.preload for c in cases) and not args.warm_agents:
        cases = [c for c in cases if not c.preload]
        results.notes.append("heavy-hpo-preload skipped: this hpo-agent has no --preload")
        print(f"note: {results.notes[-1]}", flush=True)
    if not cases:
        print("vs_optuna: no case left to run", file=sys.stderr)
        return 2
    started = time.time()
    try:
        for round_no in range(1, args.rounds + 1):
            load = os.getloadavg()[0]
            print(f"[round {round_no}/{args.rounds}] load {load:.2f}", flush=True)
            # Each round starts one case further on: no case always follows the same one.
            shift = (round_no - 1) % len(cases)
            for case in cases[shift:] + cases[:shift]:
                run_case(case, round_no, args, procs, results)
    except KeyboardInterrupt:
        return 130
    finally:
        procs.close()
    lines = summary(results, cases)
    print("\n".join(lines))
    print(f"\n{len(results.runs)} runs in {time.time() - started:.0f} s; load average now "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "cases": [asdict(c) for c in cases],
            "work_s": results.work_s, "runs": [asdict(r) for r in results.runs],
            "summary": lines, "notes": results.notes}, indent=1))
    return 0 if all(r.ok for r in results.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
