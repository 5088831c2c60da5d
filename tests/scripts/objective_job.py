"""A job for controller tests: reports loss/total = (x - 0.3)**2 + 1/(1+step) each step.
General/: x (float), y (int), steps, sleep, fail (bool), nan (bool), silent (bool)."""

import math
import sys
import time

from hpo import Task

task = Task.init(project_name="controller-tests", task_name="objective")
cfg = task.connect({"x": 0.0, "y": 1, "steps": 5, "sleep": 0.0, "fail": False,
                    "nan": False, "silent": False})
assert isinstance(cfg["y"], int), f"y arrived as {type(cfg['y']).__name__}"
logger = task.get_logger()
for step in range(cfg["steps"]):
    value = (cfg["x"] - 0.3) ** 2 + 1.0 / (1 + step)
    if cfg["nan"] and step == 1:
        value = math.nan
    if not cfg["silent"]:
        logger.report_scalar("loss", "total", value, step)
    time.sleep(cfg["sleep"])
if cfg["fail"]:
    sys.exit(1)
