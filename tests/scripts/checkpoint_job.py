"""A job that checkpoints every iteration and, when promoted, continues its parent's
checkpoint: reports loss/total from task.resume_iteration + 1 on."""

import json
import os
import time

from hpo import Task

task = Task.init(project_name="checkpoint-tests", task_name="job")
cfg = task.connect({"x": 0.5, "steps": 9, "sleep": 0.02})
state = {"seen": []}
start = 0
if task.resume_checkpoint is not None:
    state = json.loads((task.resume_checkpoint / "state.json").read_text())
    start = task.resume_iteration + 1
logger = task.get_logger()
for step in range(start, cfg["steps"]):
    state["seen"].append(step)
    logger.report_scalar("loss", "total", (cfg["x"] - 0.3) ** 2 + 1 / (1 + step), step)
    # Written aside and renamed: a stop mid-write must not leave half a file behind.
    (task.checkpoint_dir / "state.tmp").write_text(json.dumps(state))
    os.replace(task.checkpoint_dir / "state.tmp", task.checkpoint_dir / "state.json")
    task.save_checkpoint(step)
    time.sleep(cfg["sleep"])
