"""The training task the seed example optimizes: reports accuracy/total every 15,000
iterations (one "epoch"), quickly."""

import time

from hpo import Task

task = Task.init(project_name="Hyper-Parameter Optimization", task_name="seed template")
args = task.connect({"number_of_epochs": 6, "batch_size": 8, "dropout": 0.25,
                     "base_lr": 0.005})
logger = task.get_logger()
for epoch in range(args["number_of_epochs"]):
    quality = 1 - abs(args["dropout"] - 0.2) - abs(args["base_lr"] - 0.004) * 20
    accuracy = quality * (1 - 0.5 ** (epoch + 1)) * (0.9 + args["batch_size"] / 160)
    logger.report_scalar("accuracy", "total", accuracy, (epoch + 1) * 15000)
    time.sleep(0.3)
