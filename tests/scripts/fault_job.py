"""The job of the fault-injection suite (tests/faults/harness.py): one report of a
falling loss per step, ``sleep`` seconds apart, so a fault lands while jobs run and every
iteration of every job can be counted in the store afterwards."""

import time

from hpo import Task

task = Task.init(project_name="faults", task_name="job")
cfg = task.connect({"x": 0.5, "steps": 6, "sleep": 0.2})
logger = task.get_logger()
for step in range(int(cfg["steps"])):
    logger.report_scalar("loss", "value", (cfg["x"] - 0.3) ** 2 + 1.0 / (step + 1), step)
    time.sleep(cfg["sleep"])
