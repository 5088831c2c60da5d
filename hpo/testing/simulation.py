"""The real controller in simulated time: a clock that moves only when told, an agent
that runs each job for simulated time, and a driver that alternates the two.

Nothing here is a stand-in for the controller: ``Simulation`` builds a real
:class:`hpo.controller.controller.Controller` over a real store and a Celery app on the
in-memory broker (``memory://``: the messages go nowhere, the simulated agent takes its
jobs from the store). The driver calls ``Controller.step()`` and then
``SimulatedAgent.step()``, again and again, on one thread, so a run is deterministic and
an hour of optimization takes a fraction of a second: tests of limits and budgets
(``tests/test_simulation.py``) and the search-quality benchmark
(``bench/search_quality.py``) use it.

What a job does comes from a curve: ``curve(parameters, budget)`` gives the primary
objective's value after each iteration, ``budget`` iterations at most. One iteration
takes ``seconds_per_iteration`` of simulated time. The agent writes a job's reports every
``report_every`` iterations (None: all at its end) and finishes it ``completed`` when its
script ends by itself, ``stopped`` as soon as the controller asks. A trial with an
iteration budget below the script's length (a rung of BOHB or ASHA) writes its reports up
to that budget and then waits for the controller's stop, which comes on reading the
report at the budget, without spending simulated time on iterations that count for
nothing.

Not simulated: the store stamps a task's start and end in real time (``Store.now``), so
``compute_time_limit`` sees almost no compute; the strategy's own thinking takes no
simulated time (a slow strategy fills every free slot in one cycle).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hpo import defaults
from hpo import typed_params as P
from hpo.controller.controller import Controller, JobCallback
from hpo.lifecycle import Status
from hpo.optimization.config import OptimizerConfig
from hpo.optimization.ranking import budget_of
from hpo.queue.app import make_app
from hpo.records import TaskRecord
from hpo.store import ScalarReport, Store

# (parameters by name, iteration budget) -> the primary objective after each iteration
Curve = Callable[[dict[str, Any], int], Sequence[float]]

# Why run_simulation ended, besides the controller's own reasons.
CONDITION_MET = "stop_when is true"
IDLE = "idle: nothing runs, nothing is queued, nothing is launched"

# The store stamps heartbeats in real time, and the controller's reaper compares them
# with real time: the agent proves it is alive on the real clock, as often as a real one.
HEARTBEAT_S = defaults.HEARTBEAT_S


class SimulatedClock:
    """A ``Clock`` whose time moves only when told: ``advance``, ``advance_to``, or
    ``sleep``. Whoever sleeps lets the rest of the simulated world move: ``sleep`` calls
    every callable in ``while_asleep`` (the driver puts its agent there, so that jobs a
    controller stops end while it waits for them)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.while_asleep: list[Callable[[], object]] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        for move in list(self.while_asleep):
            move()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time does not go back: advance({seconds})")
        self.now += seconds

    def advance_to(self, when: float) -> None:
        if when < self.now:
            raise ValueError(f"time does not go back: from {self.now} to {when}")
        self.now = when


@dataclass
class _Run:
    """A job the agent holds: its values and how far it has reported them."""

    task_id: str
    attempt: int
    values: list[float]
    started: float  # simulated time it was claimed
    holds: bool  # after its last value it waits for the controller's stop
    reported: int = 0  # values written to the store so far


class SimulatedAgent:
    """``workers`` slots serving the queued children of one optimizer task, in
    simulated time. ``iterations``: the length of the training script (default: the
    optimization's ``max_iteration_per_job``); reports are written under the
    optimization's first objective."""

    def __init__(self, store: Store, optimizer_task_id: str, config: OptimizerConfig,
                 curve: Curve, *, clock: SimulatedClock, workers: int | None = None,
                 iterations: int | None = None, report_every: int | None = None,
                 seconds_per_iteration: float = 1.0) -> None:
        length = iterations or config.max_iteration_per_job
        if not length:
            raise ValueError("give iterations: the optimization has no "
                             "max_iteration_per_job to take the script's length from")
        if report_every is not None and report_every < 1:
            raise ValueError(f"report_every must be at least 1, not {report_every}")
        self.store, self.optimizer_task_id, self.curve = store, optimizer_task_id, curve
        self.clock = clock
        self.workers = workers or config.max_number_of_concurrent_tasks
        self.iterations = length
        self.report_every = report_every
        self.seconds_per_iteration = seconds_per_iteration
        self.queue = config.execution_queue
        self.names = [n for p in config.hyper_parameters for n in p.names]
        self.title, self.series = config.objectives[0].title, config.objectives[0].series
        self.name = f"sim-agent-{uuid.uuid4().hex[:6]}"
        self.running: dict[str, _Run] = {}
        self.iterations_run = 0  # iterations reported, over all jobs
        self.most_running = 0  # the most jobs held at one simulated instant
        self._next_beat = 0.0

    def step(self) -> bool:
        """One move: end the jobs asked to stop, and claim queued ones for free slots;
        when neither happened, advance the clock to the next report of a running job
        and write it. False when nothing runs and nothing was claimed."""
        self._beat()
        stopped = self._end_stopped()
        claimed = self._claim()
        if stopped or claimed:
            return True
        return self._advance()

    def _beat(self) -> None:
        if time.monotonic() >= self._next_beat:
            self.store.heartbeat(self.name, queues=[self.queue],
                                 slots=[str(i) for i in range(self.workers)],
                                 pid=os.getpid())
            self._next_beat = time.monotonic() + HEARTBEAT_S

    def _end_stopped(self) -> bool:
        if not self.running:
            return False
        asked = [r for r in self.store.get_tasks(list(self.running)) if r.stop_requested]
        for record in asked:
            run = self.running.pop(record.id)
            self.store.finish(run.task_id, run.attempt, Status.stopped, message="stopped")
        return bool(asked)

    def _claim(self) -> bool:
        """Free slots take the queued children, oldest first."""
        if len(self.running) >= self.workers:
            return False
        queued = self.store.find_tasks(parent=self.optimizer_task_id, status=Status.queued)
        claimed = False
        for record in sorted(queued, key=lambda t: t.created_at):
            if len(self.running) >= self.workers:
                break
            attempt = self.store.claim(record.id, self.name)
            if attempt is not None:
                self._start(record, attempt)
                claimed = True
        self.most_running = max(self.most_running, len(self.running))
        return claimed

    def _start(self, record: TaskRecord, attempt: int) -> None:
        budget = min(budget_of(record.tags) or self.iterations, self.iterations)
        parameters = {n: record.parameters.get(P.qualify(n)) for n in self.names}
        values = [float(v) for v in self.curve(parameters, budget)][:budget]
        if not values:  # a script that reports nothing ends at once
            self.store.finish(record.id, attempt, Status.completed)
            return
        self.running[record.id] = _Run(record.id, attempt, values, self.clock.monotonic(),
                                       holds=len(values) == budget < self.iterations)

    def _advance(self) -> bool:
        waiting = [r for r in self.running.values() if r.reported < len(r.values)]
        if not waiting:
            return bool(self.running)
        self.clock.advance_to(min(self._next_report_at(r) for r in waiting))
        for run in waiting:
            if self._next_report_at(run) <= self.clock.monotonic():
                self._report(run)
        return True

    def _next_report_upto(self, run: _Run) -> int:
        every = self.report_every or len(run.values)
        return min(run.reported + every, len(run.values))

    def _next_report_at(self, run: _Run) -> float:
        return run.started + self._next_report_upto(run) * self.seconds_per_iteration

    def _report(self, run: _Run) -> None:
        upto = self._next_report_upto(run)
        stamp = self.clock.time()
        self.store.append_scalars(run.task_id, [
            ScalarReport(self.title, self.series, it, run.values[it - 1], stamp)
            for it in range(run.reported + 1, upto + 1)], attempt=run.attempt)
        self.iterations_run += upto - run.reported
        run.reported = upto
        if run.reported == len(run.values) and not run.holds:  # the script ends by itself
            self.store.finish(run.task_id, run.attempt, Status.completed)
            del self.running[run.task_id]


@dataclass
class SimulationResult:
    reason: str  # the controller's reason, CONDITION_MET or IDLE
    steps: int  # controller cycles run
    seconds: float  # simulated time at the end


def run_simulation(controller: Controller, agent: SimulatedAgent, *,
                   stop_when: Callable[[], bool] | None = None, max_idle: int = 3
                   ) -> SimulationResult:
    """Alternate ``controller.step()`` and ``agent.step()`` until the optimization ends,
    ``stop_when()`` is true (checked before each step), or ``max_idle`` rounds in a row
    found nothing running, nothing queued and nothing launched (a strategy that waits
    for nothing)."""
    clock = agent.clock
    if controller.clock is not clock:
        raise ValueError("the controller and the agent must share one SimulatedClock: "
                         "give Controller(..., clock=agent.clock)")
    clock.while_asleep.append(agent.step)
    steps = idle = 0
    try:
        while stop_when is None or not stop_when():
            reason = controller.step()
            steps += 1
            if reason:
                return SimulationResult(reason, steps, clock.monotonic())
            moved = agent.step()
            progress = controller.progress()
            idle = 0 if moved or progress.running or progress.queued else idle + 1
            if idle > max_idle:
                return SimulationResult(IDLE, steps, clock.monotonic())
        return SimulationResult(CONDITION_MET, steps, clock.monotonic())
    finally:
        clock.while_asleep.remove(agent.step)


class Simulation:
    """One optimization of ``config`` over ``store`` in simulated time: it creates the
    optimizer task, a real ``controller`` on the in-memory broker, an ``agent`` and
    their shared ``clock``; ``run()`` drives them. The agent's options are
    ``SimulatedAgent``'s."""

    def __init__(self, store: Store, config: OptimizerConfig, curve: Curve, *,
                 job_complete_callback: JobCallback | None = None,
                 project: str = "simulation", name: str = "optimizer",
                 **agent_options: Any) -> None:
        config.validate()
        task = store.create_task(project, name)
        store.set_status(task.id, Status.running)
        store.create_optimization(task.id, config.to_dict())
        self.store = store
        self.optimizer_task_id = task.id
        self.clock = SimulatedClock()
        self.controller = Controller(store, make_app("memory://"), config, task.id,
                                     job_complete_callback=job_complete_callback,
                                     clock=self.clock)
        self.agent = SimulatedAgent(store, task.id, config, curve, clock=self.clock,
                                    **agent_options)

    def run(self, stop_when: Callable[[], bool] | None = None) -> SimulationResult:
        return run_simulation(self.controller, self.agent, stop_when=stop_when)
