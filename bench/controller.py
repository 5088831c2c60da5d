"""Controller benchmark: what the optimization loop costs per job, at job 10 and job 10,000.

A real ``HyperParameterOptimizer`` (RandomSearch over a continuous float range and an
int range, so every configuration is new) runs ``--jobs`` trivial jobs (2,000 by default,
``--concurrency`` at a time) against a real store (a SQLite file in a temporary
``HPO_HOME``, or ``--store``) and the embedded broker (a SQLite file). The agents are
replaced by a fake agent in a process of its own: it polls the store for the
optimization's queued children, claims each, appends a few objective scalars and
finishes it as completed. It never reads the broker: the messages the controller
publishes are never consumed, which costs the controller nothing more than the publish.

The controller runs in a process of its own too, so its CPU time is its own alone. Its
``job_complete_callback`` takes a snapshot at the window edges (jobs 1-100, 100-500,
500-1000, 1000-1500, 1500-1900, 1900-2000 for 2,000 jobs; scaled for other counts):
process CPU time (``time.process_time``), wall time, RSS (psutil), the number of
controller cycles and the CPU spent inside them (``time.thread_time`` around
``Controller._cycle``), split into ``_observe``, ``_launch`` and ``_save`` (every write
of the controller's state, wherever it is called; itself split into ``strategy.state()``
and ``store.save_optimization_state``), and ``_launch``'s ``store.clone_task`` and
``dispatch.enqueue`` / ``publish``. The fake agent notes the size of the optimization's
saved state as it finishes the jobs at the same edges.

"Flat" means the CPU per job (and per busy cycle) of the last window is about that of the
first: the ratio printed at the end. A peer shows what a bare in-process optimizer loop
costs per trial: a plain Optuna study doing the same number of ask/tell trials in memory
(RandomSampler, the same strategy; and TPE, Optuna's default), each in a fresh process.

Run it: ``python bench/controller.py`` (``--jobs 200`` for a quick look, ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve()
TITLE, SERIES = "loss", "total"  # the objective the fake agent reports
MIB = 1024 * 1024


class BenchError(Exception):
    """A step of the benchmark failed or ran past its deadline."""


def window_edges(jobs: int) -> list[int]:
    """Job counts at which snapshots are taken: for 2,000 jobs 100, 500, 1000, 1500, 1900
    and 2000 (first and last windows of the same size); scaled for other counts."""
    first = max(1, jobs // 20)
    edges = {first, jobs // 4, jobs // 2, 3 * jobs // 4, jobs - first, jobs}
    return sorted(e for e in edges if 0 < e <= jobs)


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout: how the roles talk to the orchestrator."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


# ----- role: controller ----------------------------------------------------------------


class Meter:
    """CPU seconds (of the calling thread) spent in wrapped methods, by name."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, obj: Any, name: str, label: str | None = None) -> None:
        """Meter ``obj.name`` (under ``label``, when given: another method that does
        the same work, counted in the same column)."""
        inner = getattr(obj, name)
        label = label or name

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.cpu[label] = self.cpu.get(label, 0.0) + time.thread_time() - start
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(obj, name, timed)


def role_controller(args: argparse.Namespace) -> int:
    import gc

    from hpo.automation import (
        HyperParameterOptimizer,
        UniformIntegerParameterRange,
        UniformParameterRange,
    )
    from hpo.queue import dispatch

    opt = HyperParameterOptimizer(
        base_task_id=args.base,
        hyper_parameters=[UniformParameterRange("x", 0.0, 1.0),
                          UniformIntegerParameterRange("y", 1, 100)],
        objective_metric_title=TITLE, objective_metric_series=SERIES,
        objective_metric_sign="min", optimizer_class="random",
        max_number_of_concurrent_tasks=args.concurrency, execution_queue=args.queue,
        total_max_jobs=args.jobs, auto_connect_task=False, store=args.store,
        broker_url=args.broker, seed=1)
    ctrl = opt.controller
    meter = Meter()
    for name in ("_cycle", "_observe", "_launch", "_save"):
        meter.wrap(ctrl, name)
    # Inside _save: building the strategy's state, and the store write (JSON + SQL).
    meter.wrap(ctrl.strategy, "state")
    meter.wrap(ctrl.store, "save_optimization_state")
    # Inside _launch: the clone, and the enqueue (store change + broker publish).
    meter.wrap(ctrl.store, "clone_task")
    meter.wrap(dispatch, "enqueue")
    meter.wrap(dispatch, "publish")
    # Where a launch's clones are made queued with the state saved, in one transaction
    # (Store.launch_clones), and then published: the same columns.
    if hasattr(ctrl.store, "launch_clones"):
        meter.wrap(ctrl.store, "launch_clones", label="clone_task")
        meter.wrap(dispatch, "publish_queued", label="enqueue")

    edges = set(window_edges(args.jobs))
    snapshots: list[dict[str, Any]] = []
    finished = 0
    overhead = 0.0  # process CPU the snapshots themselves took, taken off the windows

    def snapshot(jobs: int) -> None:
        nonlocal overhead
        cpu = time.process_time()
        snapshots.append({
            "jobs": jobs, "wall": time.monotonic(), "cpu": cpu - overhead,
            "rss": rss_bytes(), "gc_objects": len(gc.get_objects()),
            "cycles": meter.calls.get("_cycle", 0), "overhead": overhead,
            "parts": dict(meter.cpu), "saves": meter.calls.get("_save", 0),
        })
        overhead += time.process_time() - cpu

    def on_job(task_id: str, value: float | None, iteration: int, params: dict[str, Any],
               best: str | None) -> None:
        nonlocal finished
        finished += 1
        if finished in edges:
            snapshot(finished)

    emit("ready", id=opt.id)
    if sys.stdin.readline().strip() != "go":
        return 1
    snapshot(0)
    opt.start(job_complete_callback=on_job)
    done = opt.wait(timeout=args.deadline)
    if not done:
        opt.stop(timeout=30)
    end = {"rss": rss_bytes(), "jobs_tracked": len(ctrl.jobs),
           "state_chars": len(json.dumps(ctrl.strategy.state())),
           "cycles": meter.calls.get("_cycle", 0)}
    emit("result", done=done, outcome=ctrl.outcome, finished=finished,
         snapshots=snapshots, end=end)
    return 0 if done else 2


# ----- role: fake agent ----------------------------------------------------------------


def role_agent(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from hpo.errors import LostOwnership
    from hpo.lifecycle import FINAL_STATUSES, Status
    from hpo.store import ScalarReport, open_store, schema

    store = open_store(args.store)
    worker = f"bench-fake-agent-{uuid.uuid4().hex[:6]}"
    opt_table = schema.optimizations

    def state_chars() -> int:
        with store.engine.connect() as conn:
            value = conn.execute(select(func.length(opt_table.c.state))
                                 .where(opt_table.c.task_id == args.parent)).scalar()
        return int(value or 0)

    def beat() -> None:
        # Registered and alive: the controller's reaper must not take our tasks back.
        store.heartbeat(worker, queues=[args.queue], slots=["0"], pid=os.getpid())

    beat()
    emit("ready", worker=worker)
    edges = set(window_edges(args.jobs))
    sizes: dict[int, int] = {}
    done = 0
    lost_claims = 0
    deadline = time.monotonic() + args.deadline
    next_beat = next_check = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_beat:
            beat()
            next_beat = now + 2.0
        if now >= next_check:
            if store.get_task(args.parent).status in FINAL_STATUSES:
                break
            next_check = now + 0.5
        queued = store.find_tasks(parent=args.parent, status=Status.queued)
        for task in reversed(queued):  # oldest first
            attempt = store.claim(task.id, worker)
            if attempt is None:
                lost_claims += 1
                continue
            x = float(task.parameters.get("General/x", 0.0))
            y = int(task.parameters.get("General/y", 1))
            value = (x - 0.3) ** 2 + y / 100.0
            stamp = time.time()
            try:
                store.append_scalars(task.id, [
                    ScalarReport(TITLE, SERIES, i, value * (1 + (args.steps - 1 - i)), stamp)
                    for i in range(args.steps)], attempt=attempt)
            except LostOwnership:  # re-queued or ended meanwhile: counted, not fatal
                lost_claims += 1
                continue
            if not store.finish(task.id, attempt, Status.completed):
                lost_claims += 1
                continue
            done += 1
            if done in edges:
                sizes[done] = state_chars()
        if not queued:
            time.sleep(args.agent_poll)
    store.remove_worker(worker)
    emit("result", done=done, lost=lost_claims, state_chars=sizes,
         cpu_s=time.process_time())
    return 0


# ----- role: Optuna peer ---------------------------------------------------------------


def role_optuna(args: argparse.Namespace) -> int:
    import gc

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.RandomSampler(seed=1) if args.sampler == "random"
               else optuna.samplers.TPESampler(seed=1))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    edges = set(window_edges(args.jobs))
    snapshots: list[dict[str, Any]] = []
    overhead = 0.0

    def snapshot(jobs: int) -> None:
        nonlocal overhead
        cpu = time.process_time()
        snapshots.append({"jobs": jobs, "wall": time.monotonic(), "cpu": cpu - overhead,
                          "rss": rss_bytes(), "gc_objects": len(gc.get_objects())})
        overhead += time.process_time() - cpu

    deadline = time.monotonic() + args.deadline
    snapshot(0)
    done = 0
    for n in range(1, args.jobs + 1):
        if time.monotonic() > deadline:
            break
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        y = trial.suggest_int("y", 1, 100)
        study.tell(trial, (x - 0.3) ** 2 + y / 100.0)
        done = n
        if n in edges:
            snapshot(n)
    emit("result", done=done, finished=done, snapshots=snapshots,
         end={"rss": rss_bytes()})
    return 0


# ----- orchestrator --------------------------------------------------------------------


class Proc:
    """A role subprocess whose stdout JSON lines are read by a thread."""

    def __init__(self, role: str, argv: list[str], env: dict[str, str], log: Path,
                 label: str | None = None) -> None:
        self.role = label or role
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, str(HERE), "--role", role, *argv], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file, text=True)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.role}: no {event!r} within {timeout:.0f} s"
                                 f"{self._tail()}")
            try:
                msg = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if msg is None:
                raise BenchError(f"{self.role} exited (rc {self.popen.wait()}) before "
                                 f"{event!r}{self._tail()}")
            if msg.get("event") == event:
                return msg

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log_file.close()

    def _tail(self) -> str:
        self._log_file.flush()
        text = self.log.read_text(errors="replace")[-3000:]
        return f"\n--- {self.role} stderr ---\n{text}" if text.strip() else ""


@contextlib.contextmanager
def running(role: str, argv: list[str], env: dict[str, str], workdir: Path,
            label: str | None = None) -> Iterator[Proc]:
    proc = Proc(role, argv, env, workdir / f"{label or role}.log", label)
    try:
        yield proc
    finally:
        proc.close()


def run_hpo(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from hpo.store import open_store

    home = workdir / "home"
    store_url = args.store or f"sqlite:///{home / 'hpo.db'}"
    broker_url = args.broker or f"sqla+sqlite:///{home / 'broker.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_TASK")}
    env.update(HPO_HOME=str(home), HPO_STORE_URL=store_url, HPO_BROKER_URL=broker_url,
               PYTHONUNBUFFERED="1")
    store = open_store(store_url)
    project = f"bench-controller-{uuid.uuid4().hex[:8]}"
    base = store.create_task(project, "trivial", parameters={"General/x": 0.0,
                                                             "General/y": 1})
    store.close()
    queue_name = f"bench-{uuid.uuid4().hex[:8]}"
    common = ["--store", store_url, "--jobs", str(args.jobs), "--queue", queue_name,
              "--deadline", str(args.deadline)]
    with running("controller", [*common, "--broker", broker_url, "--base", base.id,
                                "--concurrency", str(args.concurrency)],
                 env, workdir) as ctrl:
        ready = ctrl.expect("ready", 120)
        with running("agent", [*common, "--parent", ready["id"], "--steps",
                               str(args.steps), "--agent-poll", str(args.agent_poll)],
                     env, workdir) as agent:
            agent.expect("ready", 120)
            ctrl.send("go")
            result = ctrl.expect("result", args.deadline + 90)
            agent_result = agent.expect("result", 60)
    result["agent"] = agent_result
    result["files"] = {p.name: p.stat().st_size for p in sorted(home.glob("*.db*"))}
    return result


def run_optuna(args: argparse.Namespace, workdir: Path, sampler: str) -> dict[str, Any]:
    argv = ["--jobs", str(args.jobs), "--sampler", sampler,
            "--deadline", str(args.peer_deadline)]
    with running("optuna", argv, dict(os.environ), workdir, f"optuna-{sampler}") as proc:
        return proc.expect("result", args.peer_deadline + 60)


def windows(snaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per window between consecutive snapshots: jobs, wall, CPU, cycles and parts."""
    rows = []
    for a, b in itertools.pairwise(snaps):
        jobs = b["jobs"] - a["jobs"]
        cpu = b["cpu"] - a["cpu"]
        wall = b["wall"] - a["wall"]
        row: dict[str, Any] = {
            "window": f"{a['jobs'] + 1}-{b['jobs']}", "jobs": jobs, "wall_s": wall,
            "jobs_per_s": jobs / wall if wall > 0 else math.nan,
            "cpu_ms_per_job": 1000 * cpu / jobs, "rss_mib": b["rss"] / MIB,
            "gc_objects": b["gc_objects"], "end_jobs": b["jobs"],
        }
        if "cycles" in b:
            cycles = b["cycles"] - a["cycles"]
            parts = {k: b["parts"].get(k, 0.0) - a["parts"].get(k, 0.0)
                     for k in ("_cycle", "_observe", "_launch", "_save", "state",
                               "save_optimization_state", "clone_task", "enqueue",
                               "publish")}
            # Snapshots run in the callback, inside _observe: not the controller's cost.
            taken = b["overhead"] - a["overhead"]
            parts["_cycle"] -= taken
            parts["_observe"] -= taken
            row.update(
                cycles=cycles, cycles_per_job=cycles / jobs,
                cpu_ms_per_cycle=1000 * parts["_cycle"] / cycles if cycles else math.nan,
                cycle_ms_per_job=1000 * parts["_cycle"] / jobs,
                observe_ms_per_job=1000 * parts["_observe"] / jobs,
                launch_ms_per_job=1000 * parts["_launch"] / jobs,
                save_ms_per_job=1000 * parts["_save"] / jobs,
                state_ms_per_job=1000 * parts["state"] / jobs,
                write_ms_per_job=1000 * parts["save_optimization_state"] / jobs,
                clone_ms_per_job=1000 * parts["clone_task"] / jobs,
                enqueue_ms_per_job=1000 * parts["enqueue"] / jobs,
                publish_ms_per_job=1000 * parts["publish"] / jobs,
                saves_per_job=(b["saves"] - a["saves"]) / jobs,
                outside_ms_per_job=1000 * (cpu - parts["_cycle"]) / jobs)
        rows.append(row)
    return rows


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.{digits}f}")


def print_table(title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str, int]],
                extra: Callable[[dict[str, Any]], list[str]] | None = None) -> None:
    print(f"\n{title}")
    heads = [h for h, _, _ in columns]
    cells = [[fmt(r[k], d) if not isinstance(r[k], str) else r[k] for _, k, d in columns]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    print("  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


HPO_COLUMNS = [
    ("jobs", "window", 0), ("wall s", "wall_s", 1), ("jobs/s", "jobs_per_s", 1),
    ("CPU ms/job", "cpu_ms_per_job", 2), ("cycles/job", "cycles_per_job", 2),
    ("ms/cycle", "cpu_ms_per_cycle", 2), ("observe", "observe_ms_per_job", 2),
    ("launch", "launch_ms_per_job", 2), ("save", "save_ms_per_job", 2),
    ("state()", "state_ms_per_job", 2), ("write", "write_ms_per_job", 2),
    ("clone", "clone_ms_per_job", 2), ("enqueue", "enqueue_ms_per_job", 2),
    ("publish", "publish_ms_per_job", 2),
    ("saves/job", "saves_per_job", 1), ("outside", "outside_ms_per_job", 2),
    ("RSS MiB", "rss_mib", 1), ("gc objs", "gc_objects", 0),
]
PEER_COLUMNS = [
    ("trials", "window", 0), ("wall s", "wall_s", 2), ("trials/s", "jobs_per_s", 0),
    ("CPU ms/trial", "cpu_ms_per_job", 3), ("RSS MiB", "rss_mib", 1),
    ("gc objs", "gc_objects", 0),
]


def ratio(rows: list[dict[str, Any]], key: str, against: int = 0) -> float:
    if len(rows) < 2 or not rows[against][key]:
        return math.nan
    return float(rows[-1][key] / rows[against][key])


def report(args: argparse.Namespace, hpo: dict[str, Any] | None,
           peers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs": args.jobs, "concurrency": args.concurrency}
    print(f"\nController benchmark: {args.jobs} trivial jobs, {args.concurrency} at a time, "
          f"RandomSearch, store {'--store' if args.store else 'SQLite file'}, broker "
          f"{'--broker' if args.broker else 'embedded (SQLite file)'}.")
    print("Fake agent (separate process): claim, append "
          f"{args.steps} scalar(s), finish. Broker messages are published and never "
          "consumed.")
    if hpo is not None:
        rows = windows(hpo["snapshots"])
        out["hpo"] = {"windows": rows, "outcome": hpo["outcome"], "done": hpo["done"],
                      "end": hpo["end"], "agent": hpo["agent"], "files": hpo["files"]}
        print(f"Outcome: {hpo['outcome']!r}; {hpo['finished']} job(s) heard by the callback; "
              f"fake agent ran {hpo['agent']['done']}, lost claims {hpo['agent']['lost']}.")
        print_table("hpo controller (its process only). CPU ms per job: all, then inside "
                    "_observe, _launch, every _save wherever called\n (it may be inside "
                    "_observe or _launch too), of which strategy.state() and the store "
                    "write; in _launch: clone_task (or launch_clones: clones made\n "
                    "queued, with the state's write), dispatch.enqueue (store + publish; "
                    "or publish_queued), "
                    "publish (broker only); outside: not in _cycle", rows, HPO_COLUMNS)
        sizes = hpo["agent"]["state_chars"]
        if sizes:
            print("Saved optimization state (hpo_optimizations.state) when the agent "
                  "finished job n: " + ", ".join(
                      f"{n}: {int(c) / 1024:.0f} KiB" for n, c in sorted(
                          sizes.items(), key=lambda kv: int(kv[0]))))
        print("Store files at the end: " + ", ".join(
            f"{name} {size / MIB:.1f} MiB" for name, size in hpo["files"].items()))
        if len(rows) >= 2:
            flat = {
                "cpu_per_job_last_vs_first": ratio(rows, "cpu_ms_per_job"),
                "cpu_per_job_last_vs_second": ratio(rows, "cpu_ms_per_job", 1),
                "cpu_per_cycle_last_vs_first": ratio(rows, "cpu_ms_per_cycle"),
                "save_per_job_last_vs_first": ratio(rows, "save_ms_per_job"),
                "rss_mib_first_edge": rows[0]["rss_mib"],
                "rss_mib_last_edge": rows[-1]["rss_mib"],
            }
            out["hpo"]["flat"] = flat
            print(f"\nFlat? CPU per job, last window / first: "
                  f"{fmt(flat['cpu_per_job_last_vs_first'])} (/ second window: "
                  f"{fmt(flat['cpu_per_job_last_vs_second'])}); CPU per cycle: "
                  f"{fmt(flat['cpu_per_cycle_last_vs_first'])}; _save per job: "
                  f"{fmt(flat['save_per_job_last_vs_first'])}. RSS at job "
                  f"{rows[0]['end_jobs']}: {rows[0]['rss_mib']:.1f} MiB, at job "
                  f"{rows[-1]['end_jobs']}: {rows[-1]['rss_mib']:.1f} MiB. (Flat: about 1.)")
            total_cpu = hpo["snapshots"][-1]["cpu"] - hpo["snapshots"][0]["cpu"]
            total_wall = hpo["snapshots"][-1]["wall"] - hpo["snapshots"][0]["wall"]
            done = hpo["snapshots"][-1]["jobs"]
            print(f"Overall: {1000 * total_cpu / done:.2f} CPU ms per job, "
                  f"{done / total_wall:.1f} jobs/s.")
    for name, peer in peers.items():
        rows = windows(peer["snapshots"])
        out[f"optuna_{name}"] = {"windows": rows, "done": peer["done"]}
        print_table(f"peer: plain Optuna study, {name} sampler, ask/tell in memory "
                    f"({peer['done']} trials)", rows, PEER_COLUMNS)
        if len(rows) >= 2:
            print(f"CPU per trial, last window / first: {fmt(ratio(rows, 'cpu_ms_per_job'))}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000, help="trivial jobs to run (2000)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="max_number_of_concurrent_tasks (8)")
    p.add_argument("--store", help="store URL (default: a SQLite file in a temporary "
                   "HPO_HOME); a PostgreSQL one should be a scratch database, the bench "
                   "leaves its tasks there")
    p.add_argument("--broker", help="broker URL (default: the embedded SQLite broker in "
                   "the temporary HPO_HOME)")
    p.add_argument("--steps", type=int, default=3,
                   help="objective scalars the fake agent reports per job (3)")
    p.add_argument("--agent-poll", type=float, default=0.005,
                   help="fake agent's idle poll period, seconds (0.005)")
    p.add_argument("--deadline", type=float, default=1200.0,
                   help="seconds the optimization may take before it is stopped (1200)")
    p.add_argument("--peer-deadline", type=float, default=300.0,
                   help="seconds each Optuna peer may take (300)")
    p.add_argument("--no-peer", action="store_true", help="skip the Optuna peers")
    p.add_argument("--peer-samplers", default="random,tpe",
                   help="Optuna samplers to run as peers (random,tpe)")
    p.add_argument("--only-peer", action="store_true", help="run the Optuna peers only")
    p.add_argument("--json", metavar="PATH", help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    # Internal: the subprocess roles.
    p.add_argument("--role", choices=["controller", "agent", "optuna"],
                   help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--parent", help=argparse.SUPPRESS)
    p.add_argument("--queue", default="default", help=argparse.SUPPRESS)
    p.add_argument("--sampler", default="random", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.role == "controller":
        return role_controller(args)
    if args.role == "agent":
        return role_agent(args)
    if args.role == "optuna":
        return role_optuna(args)
    if args.jobs < 2:
        raise SystemExit("--jobs must be at least 2")
    workdir = Path(tempfile.mkdtemp(prefix="hpo-bench-controller-"))
    try:
        hpo = None if args.only_peer else run_hpo(args, workdir)
        peers = {} if args.no_peer else {
            s: run_optuna(args, workdir, s) for s in args.peer_samplers.split(",") if s}
        out = report(args, hpo, peers)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
