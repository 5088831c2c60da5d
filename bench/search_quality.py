"""Search-quality benchmark: how fast random search, TPE, BOHB and ASHA find good
configurations, driven through the controller's real code path in simulated time.

Each run is a :class:`hpo.testing.simulation.Simulation`: a real
:class:`hpo.controller.controller.Controller` over a real store (a SQLite file in a
temporary folder) and a Celery app on the in-memory broker (``memory://``: the messages
go nowhere), driven on one thread in simulated time with a simulated agent
(``Controller.step()``, then ``SimulatedAgent.step()``, again and again). The agent
claims the queued children (``store.claim``), gives each its own simulated worker
(``--workers``, the controller's ``max_number_of_concurrent_tasks``), and, when a job's
simulated time is up, appends its objective scalars for iterations 1 to its budget in one
``store.append_scalars`` and finishes it: ``completed`` when it ran to
``max_iteration_per_job``, ``stopped`` once the controller asks it to stop (it does, on
reading the scalar at the job's budget). One iteration takes one unit of simulated time,
so the strategies see the results in the order a real cluster would give them. The
agent knows each job's iteration budget (its ``budget:<n>`` tag) to schedule its end and
reports it all at once: that is why pruners that stop a job at an arbitrary iteration are
not simulated (TPE runs with Optuna's ``NopPruner``).

Budget is counted in full-budget draws: the iterations run by every job (a promoted
configuration restarts from scratch, as the controller does today) divided by
``max_iteration_per_job``. The incumbent is the best configuration the controller has
heard of at the full budget (``job_complete_callback``, iteration == max), scored by its
noise-free full-fidelity value; normalized regret = (f(incumbent) - f*) / |f*|. Runs
stop once the budget (``--budget``, in full draws, 40 by default) is spent.

Problems:

* ``counting_ones``: the BOHB paper's toy problem, 8 categorical {0, 1} + 8 continuous
  [0, 1] dimensions, f = -(sum of the categorical ones + sum over the continuous x_i of
  Binomial(b, x_i) / b), b draws at budget b; b = 9 * iteration, iterations 1..81, so
  with eta 3 the budgets are 9, 27, 81, 243, 729 draws. The noise is seeded per (run
  seed, configuration, b). f* = -16.
* ``hartmann6`` / ``branin``: multi-fidelity variants from the BOCA paper (Kandasamy et
  al. 2017), with one fidelity z = iteration / 27 (iterations 1..27): Hartmann-6 with the
  coefficients alpha' = alpha - 0.1 (1 - z), f* = -3.32237; Branin with
  b = 5.1 / (4 pi^2) - 0.01 (1 - z), c = 5 / pi - 0.1 (1 - z),
  t = 1 / (8 pi) + 0.05 (1 - z), f* = 0.397887.
* ``digits``: SGDClassifier on scikit-learn's bundled digits (train 1,200 / validation
  597, standardized), one ``partial_fit`` epoch per iteration, 1..81 epochs, over a grid
  of 96 configurations (alpha x eta0 x learning_rate x loss). The validation
  error after every epoch of every configuration is computed once and cached
  (``$TMPDIR/hpo-bench-search-quality/``); the agent replays it. f* is the grid's best
  error at 81 epochs.

Strategies: ``random``, ``optuna`` (TPE, NopPruner), ``bohb`` and ``asha`` (eta 3,
``min_iteration_per_job`` 1), each seeded from the run seed.

Output, per problem: median normalized regret at a few budgets, the budget each
strategy needs to reach random search's final median regret (the first budget at which
its median curve over the seeds is there) and its ratio to random's budget, and
PASS/FAIL lines for the checks: on counting ones BOHB and ASHA need at most a third of
random's budget, and TPE's final median regret is no worse than random's.

Run it: ``python bench/search_quality.py`` (``--help``; ``--budget 27 --seeds 3`` for a
quick look).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TITLE, SERIES = "objective", "value"
STRATEGIES = ("random", "optuna", "bohb", "asha")
PROBLEMS = ("counting_ones", "hartmann6", "branin", "digits")
LABELS = {"random": "random", "optuna": "TPE", "bohb": "BOHB", "asha": "ASHA"}
CACHE_DIR = Path(tempfile.gettempdir()) / "hpo-bench-search-quality"


# ----- problems ------------------------------------------------------------------------


@dataclass
class Problem:
    name: str
    space: list[Any]  # hpo.automation parameter ranges
    max_iteration: int
    optimum: float
    # (parameters, iterations 1..n, run seed) -> the objective reported at each one
    curve: Callable[[dict[str, Any], int, int], list[float]]
    # parameters -> the noise-free objective at the full budget
    true_value: Callable[[dict[str, Any]], float]
    min_iteration: int = 1
    base_parameters: dict[str, Any] = field(default_factory=dict)


def _stable_seed(*parts: Any) -> int:
    text = json.dumps(parts, sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def counting_ones() -> Problem:
    from hpo.automation import DiscreteParameterRange, UniformParameterRange

    cats = [f"c{i}" for i in range(8)]
    conts = [f"x{i}" for i in range(8)]
    space = ([DiscreteParameterRange(n, [0, 1]) for n in cats]
             + [UniformParameterRange(n, 0.0, 1.0) for n in conts])

    def curve(p: dict[str, Any], n: int, seed: int) -> list[float]:
        ones = sum(int(p[c]) for c in cats)
        xs = np.clip(np.array([float(p[c]) for c in conts]), 0.0, 1.0)
        key = [int(p[c]) for c in cats] + [float(p[c]) for c in conts]
        out = []
        for it in range(1, n + 1):
            b = 9 * it
            rng = np.random.default_rng(_stable_seed(seed, key, b))
            out.append(-(ones + float(np.sum(rng.binomial(b, xs) / b))))
        return out

    def true_value(p: dict[str, Any]) -> float:
        return -(sum(int(p[c]) for c in cats) + sum(float(p[c]) for c in conts))

    return Problem("counting_ones", space, 81, -16.0, curve, true_value,
                   base_parameters={n: 0 for n in cats} | {n: 0.0 for n in conts})


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                 [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886],
                        [2329, 4135, 8307, 3736, 1004, 9991],
                        [2348, 1451, 3522, 2883, 3047, 6650],
                        [4047, 8828, 8732, 5743, 1091, 381]])


def hartmann6_at(x: np.ndarray, z: float) -> float:
    alpha = _H_ALPHA - 0.1 * (1.0 - z)
    return float(-np.sum(alpha * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))


def hartmann6() -> Problem:
    from hpo.automation import UniformParameterRange

    names = [f"x{i}" for i in range(6)]
    space = [UniformParameterRange(n, 0.0, 1.0) for n in names]
    top = 27

    def vec(p: dict[str, Any]) -> np.ndarray:
        return np.array([float(p[n]) for n in names])

    def curve(p: dict[str, Any], n: int, seed: int) -> list[float]:
        x = vec(p)
        return [hartmann6_at(x, it / top) for it in range(1, n + 1)]

    return Problem("hartmann6", space, top, -3.32237, curve,
                   lambda p: hartmann6_at(vec(p), 1.0),
                   base_parameters={n: 0.0 for n in names})


def branin_at(x1: float, x2: float, z: float) -> float:
    b = 5.1 / (4 * math.pi**2) - 0.01 * (1 - z)
    c = 5 / math.pi - 0.1 * (1 - z)
    t = 1 / (8 * math.pi) + 0.05 * (1 - z)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def branin() -> Problem:
    from hpo.automation import UniformParameterRange

    space = [UniformParameterRange("x1", -5.0, 10.0), UniformParameterRange("x2", 0.0, 15.0)]
    top = 27

    def curve(p: dict[str, Any], n: int, seed: int) -> list[float]:
        return [branin_at(float(p["x1"]), float(p["x2"]), it / top) for it in range(1, n + 1)]

    return Problem("branin", space, top, 0.397887, curve,
                   lambda p: branin_at(float(p["x1"]), float(p["x2"]), 1.0),
                   base_parameters={"x1": 0.0, "x2": 0.0})


# 96 configurations: about 1.5 s each to precompute (81 epochs) on one core.
DIGITS_GRID: dict[str, list[Any]] = {
    "alpha": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
    "eta0": [1e-3, 1e-2, 1e-1, 1.0],
    "learning_rate": ["constant", "invscaling"],
    "loss": ["hinge", "log_loss"],
}
DIGITS_EPOCHS = 81


def _digits_key(p: dict[str, Any]) -> str:
    return json.dumps([p[k] for k in DIGITS_GRID])


def _digits_data() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, train_size=1200, random_state=0,
                                                      stratify=y)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def _digits_errors(p: dict[str, Any]) -> list[float]:
    """Validation error after each of DIGITS_EPOCHS partial_fit epochs."""
    import warnings

    from sklearn.linear_model import SGDClassifier

    x_train, x_val, y_train, y_val = _digits_data()
    classes = np.unique(y_train)
    clf = SGDClassifier(random_state=0, **p)
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(DIGITS_EPOCHS):
            clf.partial_fit(x_train, y_train, classes=classes)
            errors.append(float(1.0 - clf.score(x_val, y_val)))
    return errors


def digits_table(jobs: int = 1) -> dict[str, list[float]]:
    """Validation error after each epoch, for every configuration of the grid (cached)."""
    import itertools

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tag = _stable_seed(DIGITS_GRID, DIGITS_EPOCHS, "v1") % 10**10
    path = CACHE_DIR / f"digits-{tag}.json"
    if path.exists():
        table: dict[str, list[float]] = json.loads(path.read_text())
        return table
    configs = [dict(zip(DIGITS_GRID, values, strict=True))
               for values in itertools.product(*DIGITS_GRID.values())]
    started = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        errors = list(pool.map(_digits_errors, configs))
    table = {_digits_key(p): e for p, e in zip(configs, errors, strict=True)}
    print(f"digits: {len(table)} configurations x {DIGITS_EPOCHS} epochs precomputed in "
          f"{time.monotonic() - started:.0f} s, cached in {path}", file=sys.stderr)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(path)
    return table


def digits() -> Problem:
    from hpo.automation import DiscreteParameterRange

    table = digits_table()
    space = [DiscreteParameterRange(k, v) for k, v in DIGITS_GRID.items()]

    def curve(p: dict[str, Any], n: int, seed: int) -> list[float]:
        return table[_digits_key(p)][:n]

    best = min(errors[-1] for errors in table.values())
    return Problem("digits", space, DIGITS_EPOCHS, best, curve,
                   lambda p: table[_digits_key(p)][-1],
                   base_parameters={k: v[0] for k, v in DIGITS_GRID.items()})


MAKERS: dict[str, Callable[[], Problem]] = {
    "counting_ones": counting_ones, "hartmann6": hartmann6, "branin": branin,
    "digits": digits}


# ----- one run: a real controller, a simulated agent -------------------------------------


def strategy_kwargs(strategy: str, seed: int) -> dict[str, Any]:
    if strategy == "optuna":
        return {"seed": seed, "optuna_pruner": "NopPruner"}
    if strategy in ("bohb", "asha"):
        return {"seed": seed, "eta": 3}
    return {"seed": seed}


def run_one(problem_name: str, strategy: str, seed: int, budget: float, workers: int,
            tmp_root: str | None) -> dict[str, Any]:
    """One optimization; returns the incumbent's regret against the budget used."""
    logging.getLogger("hpo").setLevel(logging.WARNING)
    from hpo.optimization.config import OptimizerConfig
    from hpo.store import open_store
    from hpo.strategies.base import Objective
    from hpo.testing.simulation import CONDITION_MET, Simulation

    problem = MAKERS[problem_name]()
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="hpo-bench-sq-", dir=tmp_root))
    store = open_store(f"sqlite:///{folder / 'hpo.db'}")
    try:
        base = store.create_task("bench-search-quality", problem.name,
                                 parameters=problem.base_parameters)
        config = OptimizerConfig(
            base_task_id=base.id, hyper_parameters=problem.space,
            objectives=[Objective(TITLE, SERIES, "min")], strategy=strategy,
            strategy_kwargs=strategy_kwargs(strategy, seed),
            max_number_of_concurrent_tasks=workers, execution_queue="bench",
            min_iteration_per_job=problem.min_iteration,
            max_iteration_per_job=problem.max_iteration)

        curve: list[tuple[float, float]] = []  # (full draws used, normalized regret)
        best_value = math.inf
        sim: Simulation | None = None

        def on_job(task_id: str, value: float | None, iteration: int,
                   params: dict[str, Any], best: str | None) -> None:
            nonlocal best_value
            if value is None or iteration < problem.max_iteration or value >= best_value:
                return
            best_value = value
            regret = (problem.true_value(params) - problem.optimum) / abs(problem.optimum)
            assert sim is not None
            curve.append((sim.agent.iterations_run / problem.max_iteration, max(regret, 0.0)))

        sim = Simulation(store, config, lambda p, n: problem.curve(p, n, seed),
                         job_complete_callback=on_job, project="bench-search-quality",
                         name=f"{strategy} seed {seed}", workers=workers,
                         iterations=problem.max_iteration)
        agent = sim.agent
        result = sim.run(stop_when=lambda: agent.iterations_run >= budget * problem.max_iteration)
        used = agent.iterations_run / problem.max_iteration
        return {"problem": problem_name, "strategy": strategy, "seed": seed,
                "curve": curve, "used": used, "jobs": sim.controller.progress().launched,
                "cycles": result.steps,
                "outcome": "budget spent" if result.reason == CONDITION_MET else result.reason,
                "wall_s": time.monotonic() - started}
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


# ----- report --------------------------------------------------------------------------


def regret_at(curve: list[list[float]] | list[tuple[float, float]], budget: float) -> float:
    """The incumbent's regret once ``budget`` full draws are used (inf: none yet)."""
    value = math.inf
    for used, regret in curve:
        if used > budget + 1e-9:
            break
        value = regret
    return value


def needed(curves: list[Any], target: float) -> float:
    """The first budget at which the median (over seeds) regret reaches ``target``
    (inf: never)."""
    for budget in sorted({float(used) for curve in curves for used, _ in curve}):
        if median([regret_at(c, budget) for c in curves]) <= target + 1e-12:
            return budget
    return math.inf


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def fmt(x: float, digits: int = 4) -> str:
    if math.isinf(x):
        return "-"
    return f"{x:.{digits}g}"


def report(results: list[dict[str, Any]], budget: float, strategies: list[str]
           ) -> tuple[list[str], dict[str, Any]]:
    lines: list[str] = []
    checks: dict[str, Any] = {}
    problems = [p for p in PROBLEMS if any(r["problem"] == p for r in results)]
    marks = [b for b in (3, 9, 27, 81, 243, 729) if b < budget] + [budget]
    for problem in problems:
        runs = {s: [r for r in results if r["problem"] == problem and r["strategy"] == s]
                for s in strategies}
        seeds = max(len(v) for v in runs.values())
        lines.append(f"\n== {problem}: median normalized regret over {seeds} seeds "
                     "(budget in full-budget draws) ==")
        head = f"{'budget':>8} " + " ".join(f"{LABELS[s]:>10}" for s in strategies)
        lines.append(head)
        for mark in marks:
            row = [median([regret_at(r["curve"], mark) for r in runs[s]]) for s in strategies]
            lines.append(f"{mark:>8g} " + " ".join(f"{fmt(v):>10}" for v in row))
        jobs = [median([r["jobs"] for r in runs[s]]) for s in strategies]
        lines.append(f"{'jobs':>8} " + " ".join(f"{v:>10.0f}" for v in jobs))
        wall = [median([r["wall_s"] for r in runs[s]]) for s in strategies]
        lines.append(f"{'wall s':>8} " + " ".join(f"{v:>10.1f}" for v in wall))
        if "random" not in runs or not runs["random"]:
            continue
        target = median([regret_at(r["curve"], budget) for r in runs["random"]])
        lines.append(f"budget to reach random search's final median regret {fmt(target)} "
                     f"(random's budget {budget:g}), the first budget where the median is there:")
        info: dict[str, Any] = {"target": target}
        for s in strategies:
            need = needed([r["curve"] for r in runs[s]], target)
            final = median([regret_at(r["curve"], budget) for r in runs[s]])
            ratio = need / budget
            info[s] = {"needed": need, "ratio": ratio, "final": final}
            lines.append(f"  {LABELS[s]:>7}: {fmt(need):>8} draws, {fmt(ratio, 3):>6} x "
                         f"random's budget; final median regret {fmt(final)}")
        checks[problem] = info
    if "counting_ones" in checks:
        info = checks["counting_ones"]
        for s in ("bohb", "asha"):
            if s in info:
                ok = info[s]["ratio"] <= 1 / 3
                lines.append(f"{'PASS' if ok else 'FAIL'}: counting_ones: {LABELS[s]} reaches "
                             f"random's final regret with {fmt(info[s]['ratio'], 3)} x its "
                             "budget (at most 1/3)")
        if "optuna" in info:
            ok = info["optuna"]["final"] <= info["random"]["final"] + 1e-12
            lines.append(f"{'PASS' if ok else 'FAIL'}: counting_ones: TPE's final median "
                         f"regret {fmt(info['optuna']['final'])} is no worse than random's "
                         f"{fmt(info['random']['final'])}")
    return lines, checks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default=",".join(PROBLEMS),
                   help=f"comma-separated ({','.join(PROBLEMS)})")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated ({','.join(STRATEGIES)}); random is the reference")
    p.add_argument("--seeds", type=int, default=10, help="seeds per strategy (10)")
    p.add_argument("--budget", type=float, default=40,
                   help="full-budget draws each run may use (40)")
    p.add_argument("--workers", type=int, default=4,
                   help="simulated agents = max_number_of_concurrent_tasks (4)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="runs in parallel, one process each (the CPU count)")
    p.add_argument("--json", metavar="PATH", help="also write every run's curve here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = [p for p in args.problems.split(",") if p]
    strategies = [s for s in args.strategies.split(",") if s]
    for p in problems:
        if p not in MAKERS:
            raise SystemExit(f"unknown problem {p!r}: use {', '.join(PROBLEMS)}")
    for s in strategies:
        if s not in STRATEGIES:
            raise SystemExit(f"unknown strategy {s!r}: use {', '.join(STRATEGIES)}")
    if "digits" in problems:
        digits_table(args.jobs)  # once, before the workers need it
    tmp_root = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
        else None
    started = time.monotonic()
    runs = [(p, s, seed) for p in problems for seed in range(args.seeds) for s in strategies]
    results: list[dict[str, Any]] = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, p, s, seed, args.budget, args.workers, tmp_root):
                   (p, s, seed) for p, s, seed in runs}
        for future in concurrent.futures.as_completed(futures):
            p, s, seed = futures[future]
            try:
                result = future.result()
            except Exception as exc:
                for other in futures:
                    other.cancel()
                print(f"run {p} {s} seed {seed} failed: {exc!r}", file=sys.stderr)
                raise
            results.append(result)
            print(f"[{time.monotonic() - started:6.0f} s] {p} {s} seed {seed}: "
                  f"{result['jobs']} jobs, {result['used']:.1f} draws, "
                  f"{result['outcome']}, {result['wall_s']:.1f} s", file=sys.stderr)
    lines, checks = report(results, args.budget, strategies)
    print("\n".join(lines))
    print(f"\n{len(runs)} runs in {time.monotonic() - started:.0f} s")
    if args.json:
        with contextlib.suppress(OSError):
            Path(args.json).write_text(json.dumps({"args": vars(args), "checks": checks,
                                                   "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
