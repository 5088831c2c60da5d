"""Running one optimization in this process for ``hpo-controller start`` / ``resume``:
start it (with local agents or without), show its progress, turn the first Ctrl-C
(or SIGTERM) into a clean stop and the second into leaving at once."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from hpo.cli.common import one_line
from hpo.controller.display import Display
from hpo.defaults import (
    DISPLAY_POLL_S,
    DISPLAY_READ_SHARE,
    DISPLAY_REREAD_S,
    LOCAL_AGENTS_QUIT_TIMEOUT_S,
)
from hpo.errors import HpoError
from hpo.lifecycle import Status
from hpo.optimization.summary import LiveSummary, OptimizationSummary, summarize
from hpo.store import Store

if TYPE_CHECKING:
    from hpo.controller.controller import Progress
    from hpo.controller.optimizer import HyperParameterOptimizer

T = TypeVar("T")


def run_session(optimizer: HyperParameterOptimizer, store: Store, display: Display, *,
                local_agents: int | None, top: int, prog: str) -> int:
    """Run ``optimizer`` to its end with ``display`` showing it; the exit code: 0, 1
    when the optimization failed, 130 when interrupted. ``prog`` names the command in
    what it tells the user to run."""
    display.started(optimizer.id)
    display.note(_where(store, optimizer.broker_url))
    with Interrupts() as interrupts:
        try:
            _start(optimizer, store, display, local_agents)
            _watch(optimizer, store, display, interrupts, top)
        except KeyboardInterrupt:
            display.close()
            optimizer.stop_local_agents(timeout=LOCAL_AGENTS_QUIT_TIMEOUT_S)
            print(f"{prog}: interrupted: the optimization was left running; "
                  f"`{prog} resume {optimizer.id}` continues it", file=sys.stderr)
            return 130
        finally:
            display.close()
    summary = summarize(store, optimizer.id, top_k=top)
    display.finished(summary)
    if interrupts.count:
        return 130
    return 1 if summary.status == Status.failed.value else 0


def _where(store: Store, broker_url: str) -> str:
    """Which store and broker this run uses, passwords masked: a wrong or missing
    HPO_STORE_URL / HPO_BROKER_URL shows at once."""
    from hpo.limits import hide_password
    from hpo.store.engine import safe_url

    return f"store {safe_url(store.url)}, broker {hide_password(broker_url)}"


def _start(optimizer: HyperParameterOptimizer, store: Store, display: Display,
           local_agents: int | None) -> None:
    for notice in optimizer.notices_before_start():  # once, before the first job
        display.note(notice)
    if local_agents:
        display.note(f"starting {local_agents} local agent(s)")
        try:
            optimizer.start_locally(agents=local_agents)
        except BaseException as exc:
            _fail(store, optimizer.id, f"local agents did not start: {exc}")
            raise
        display.note(f"jobs run on {local_agents} local agent(s), queue "
                     f"{optimizer.config.execution_queue}")
    else:
        optimizer.start()
        queue = optimizer.config.execution_queue
        display.note(f"jobs go to queue {queue!r}: agents serve it (hpo-agent --queue "
                     f"{queue})")


def _watch(optimizer: HyperParameterOptimizer, store: Store, display: Display,
           interrupts: Interrupts, top: int) -> None:
    """Refresh the display until the optimization ends; the first interrupt stops it."""
    stop_sent = False
    changes = Changes(optimizer.progress)
    # Each refresh reads the jobs new or going, named by the controller, not every job
    live = LiveSummary(optimizer.id, top)
    launched = 0  # the controller's jobs named to it so far
    summary: OptimizationSummary | None = None
    while True:
        done = optimizer.wait(DISPLAY_POLL_S)
        for notice in optimizer.notices():
            display.note(notice)
        if interrupts.stop.is_set() and not stop_sent:
            stop_sent = True
            display.note("stopping: every job is stopped (Ctrl-C again to quit at once)")
            optimizer.stop(timeout=0)
        # Read the store when the controller's own counts change, and now and then for
        # the clocks.
        if changes.seen() or done or summary is None:
            jobs, active = optimizer.job_ids()
            check = [*jobs[launched:], *active]
            launched = len(jobs)
            summary = changes.timed(functools.partial(_summary, store, live, check))
        display.refresh(summary, final=done, ended=live.ended)
        if done:
            return


class Interrupts:
    """SIGINT/SIGTERM while an optimization runs: the first asks for a clean stop, the
    second quits at once."""

    def __init__(self) -> None:
        self.count = 0
        self.stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.stop.set()
        if self.count > 1:
            raise KeyboardInterrupt


class Changes:
    """Whether the running optimization moved since the last look (jobs launched,
    started or ended, from the controller's memory), or DISPLAY_REREAD_S passed; and never
    sooner than DISPLAY_READ_SHARE times the last read's duration after it, so that on a large
    optimization whose jobs end every moment the display's reads (in proportion to the
    jobs that changed) take at most 1/(DISPLAY_READ_SHARE+1) of the time from the
    controller sharing the process."""

    def __init__(self, progress: Callable[[], Progress]) -> None:
        self.progress = progress
        self.last: tuple[int, ...] = ()
        self.read_at = 0.0
        self.read_s = 0.0

    def seen(self) -> bool:
        p = self.progress()
        key = (p.launched, p.running, p.queued, p.finished)
        now = time.monotonic()
        if now - self.read_at < DISPLAY_READ_SHARE * self.read_s:
            return False  # the change is seen at the next look after the pause
        if key != self.last or now - self.read_at >= DISPLAY_REREAD_S:
            self.last, self.read_at = key, now
            return True
        return False

    def timed(self, read: Callable[[], T]) -> T:
        """``read()``, remembering how long it took."""
        start = time.monotonic()
        try:
            return read()
        finally:
            self.read_s = time.monotonic() - start


def _summary(store: Store, live: LiveSummary, check: list[str]) -> OptimizationSummary | None:
    try:
        return live.read(store, check)
    except HpoError as exc:  # the store is busy or away a moment: show the next one
        logging.getLogger("hpo.controller").warning("progress not read: %s", exc)
        return None


def _fail(store: Store, optimizer_id: str, message: str) -> None:
    try:
        if store.get_task(optimizer_id).status is Status.running:
            store.set_status(optimizer_id, Status.failed, message=one_line(message))
    except HpoError:
        pass
