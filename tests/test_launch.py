"""The controller's cycle asks a slow strategy (a model fitted per draw) for a few
trials at a time, so reports, budgets and stop requests are watched between draws; a
fast one fills every free slot in one cycle."""

from __future__ import annotations

import time
from pathlib import Path

from hpo.automation import UniformParameterRange
from hpo.controller import controller as controller_module
from hpo.controller.controller import Controller
from hpo.lifecycle import Status
from hpo.optimization.config import OptimizerConfig
from hpo.queue.app import make_app
from hpo.store import open_store
from hpo.strategies.base import Objective
from hpo.strategies.random_search import RandomSearch

DRAW_S = 0.03


class SlowRandom(RandomSearch):
    """Random search that takes DRAW_S per draw, like a model-based strategy."""

    def suggest(self):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + DRAW_S
        while time.monotonic() < deadline:  # busy, as a model fit is
            pass
        return super().suggest()


def controller(tmp_path: Path, strategy: str) -> Controller:
    store = open_store(f"sqlite:///{tmp_path / 'hpo.db'}")
    base = store.create_task("launch-tests", "base", parameters={"General/x": 0.0})
    config = OptimizerConfig(
        base_task_id=base.id, hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
        objectives=[Objective("loss", "total", "min")], strategy=strategy,
        max_number_of_concurrent_tasks=8, total_max_jobs=8, execution_queue="launch-tests")
    opt = store.create_task("launch-tests", "optimizer")
    store.set_status(opt.id, Status.running)
    store.create_optimization(opt.id, config.to_dict())
    return Controller(store, make_app("memory://"), config, opt.id, poll_s=0.0)


def test_a_slow_strategy_fills_the_free_slots_over_several_cycles(tmp_path):
    ctrl = controller(tmp_path, f"{__name__}.SlowRandom")
    ctrl.step()
    first = len(ctrl.active)
    # About LAUNCH_SLICE_S of drawing per cycle: 2 or 3 draws of 30 ms, not all 8.
    slice_draws = controller_module.LAUNCH_SLICE_S / DRAW_S
    assert 1 <= first <= slice_draws + 2 and first < 8
    cycles = 1
    while len(ctrl.active) < 8 and cycles < 20:
        ctrl.step()
        cycles += 1
    assert len(ctrl.active) == 8 and cycles > 1  # every slot filled, a few per cycle
    ctrl.store.close()


def test_a_fast_strategy_fills_every_free_slot_in_one_cycle(tmp_path):
    ctrl = controller(tmp_path, "random")
    ctrl.step()
    assert len(ctrl.active) == 8
    ctrl.store.close()
