"""A job for tests/test_secrets.py: writes what it can see of the credentials to the
JSON file General/out (its environment, every process's command line, and what a store
read through the SDK gave), then reports three scalars."""

import json
import os

import psutil

from hpo import Task
from hpo.errors import HpoError

task = Task.init(project_name="secrets", task_name="job")
cfg = task.connect({"out": ""})

command_lines = []
for proc in psutil.process_iter(["pid", "cmdline"]):
    command_lines.append(" ".join(proc.info["cmdline"] or []))
try:
    store_read = Task.get_task(task_id=task.id).id
except HpoError as exc:
    store_read = f"error: {exc}"
with open(cfg["out"], "w") as out:
    json.dump({"environ": dict(os.environ), "command_lines": command_lines,
               "store_read": store_read}, out)

logger = task.get_logger()
for step in range(3):
    logger.report_scalar("metric", "value", float(step), step)
