"""A training script as a user writes it: Task.init, connect, argparse, report_scalar.
It prints one JSON line with what it saw, for the tests to read."""

import argparse
import json
import sys

from hpo import Task

task = Task.init(project_name="sdk-tests", task_name="demo")
config = {"lr": 0.1, "epochs": 3, "use_bn": True, "layers": [64, 32], "note": None,
          "optimizer": {"name": "sgd", "momentum": 0.9}}
task.connect(config)
parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=16)
parser.add_argument("--fail", action="store_true")
args = parser.parse_args()

logger = task.get_logger()
for epoch in range(config["epochs"]):
    logger.report_scalar("accuracy", "validation", 0.5 + 0.1 * epoch * config["lr"], epoch)
logger.report_text("training done")
heavy = sorted({m.split(".")[0] for m in sys.modules}
               & {"sqlalchemy", "celery", "psutil", "typing"})
print(json.dumps({"task_id": task.id, "config": config, "batch": args.batch, "heavy": heavy}))
if args.fail:
    raise RuntimeError("boom")
