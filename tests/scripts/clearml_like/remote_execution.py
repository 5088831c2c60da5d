"""Like ClearML's remote-execution recipe: run by hand to set up, then
task.execute_remotely() stops the hand run and queues the task for an agent, which runs
it from the top (execute_remotely is then a no-op) (imports changed to hpo; written for
hpo's tests)."""

import json
import os
import sys

from hpo import Task

task = Task.init(project_name="clearml-like", task_name="remote execution")
params = task.connect({"epochs": 2, "lr": 0.1})
task.execute_remotely(queue_name=os.environ.get("EXAMPLE_QUEUE", "default"), exit_process=True)
logger = task.get_logger()
for epoch in range(params["epochs"]):
    logger.report_scalar("loss", "train", params["lr"] / (epoch + 1), epoch)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "celery"})
print("RESULT " + json.dumps({"task_id": task.id, "ran_training": True, "heavy": heavy}))
